#include <cstdio>
#include <cstdlib>

#include "fuzz_target.h"

void fuzz_check_failed(const char* what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what);
  std::abort();
}
