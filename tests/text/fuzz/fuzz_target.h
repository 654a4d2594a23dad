// The entry points every text-layer fuzz target defines, as libFuzzer expects them. Built with
// -fsanitize=fuzzer they run under libFuzzer; otherwise random_input_driver.cpp calls them with
// pseudo-random inputs for a bounded time (a ctest test).
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv);
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

// Stops the process with a message: libFuzzer then saves the input that caused it.
[[noreturn]] void fuzz_check_failed(const char* what);
#define FUZZ_CHECK(condition)                        \
  do {                                               \
    if (!(condition)) fuzz_check_failed(#condition); \
  } while (false)
