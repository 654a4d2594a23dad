#include "server/random_id.h"

#include <random>

namespace longctx::server {

std::string random_id(std::string_view prefix, size_t length) {
  static constexpr std::string_view kAlphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  // One generator per thread, seeded from the OS: no lock, and no two threads in step.
  thread_local std::mt19937_64 generator{std::random_device{}()};
  std::uniform_int_distribution<size_t> pick(0, kAlphabet.size() - 1);
  std::string id(prefix);
  for (size_t i = 0; i < length; ++i)
    id.push_back(kAlphabet[pick(generator)]);
  return id;
}

}  // namespace longctx::server
