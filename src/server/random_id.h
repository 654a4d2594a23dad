// Identifiers the API hands out (chatcmpl-..., cmpl-..., call_...): a prefix and random
// letters and digits, unique enough that concurrent requests never share one.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace longctx::server {

std::string random_id(std::string_view prefix, size_t length = 24);

}  // namespace longctx::server
