// A sequence's block tables: for each logical block of 256 positions, the page id in the
// window pool and in each compressed pool. Plain data handed to the backends.
#pragma once

#include <cstdint>
#include <vector>

namespace longctx {

inline constexpr int32_t kNoPage = -1;

struct BlockTables {
  std::vector<int32_t> window;                   // [logical block]; kNoPage once released
  std::vector<std::vector<int32_t>> compressed;  // [compressed pool][logical block]
};

}  // namespace longctx
