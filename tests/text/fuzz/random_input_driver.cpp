// Runs a fuzz target without libFuzzer (GCC builds, plain ctest): the seed inputs, then inputs
// made by mutating and splicing them or drawn at random, until the time budget is spent.
//   text_fuzz_X [--file PATH]... [--strings JSON_PATH]...
// --file adds a file as one seed; --strings adds every string value of a JSON file. Each seed
// gets a random first byte, the control byte of the targets that read one. LONGCTX_FUZZ_SECONDS
// (default 5) bounds the run, LONGCTX_FUZZ_SEED (default 1) picks the random sequence.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_target.h"

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

void collect_strings(const nlohmann::json& value, std::vector<std::string>& out) {
  if (value.is_string()) out.push_back(value.get<std::string>());
  if (value.is_array() || value.is_object()) {
    for (const auto& child : value)
      collect_strings(child, out);
  }
}

std::string mutate(std::string input, const std::vector<std::string>& seeds, std::mt19937& rng) {
  const auto pick = [&](size_t bound) {
    return bound == 0 ? size_t{0} : std::uniform_int_distribution<size_t>(0, bound - 1)(rng);
  };
  const int edits = 1 + static_cast<int>(pick(8));
  for (int i = 0; i < edits; ++i) {
    switch (pick(6)) {
      case 0:  // flip a byte
        if (!input.empty()) input[pick(input.size())] = static_cast<char>(rng());
        break;
      case 1:  // insert random bytes
        input.insert(pick(input.size() + 1), std::string(1 + pick(8), static_cast<char>(rng())));
        break;
      case 2:  // cut a range
        if (!input.empty()) {
          const size_t at = pick(input.size());
          input.erase(at, pick(input.size() - at + 1));
        }
        break;
      case 3: {  // splice in part of another seed
        const std::string& other = seeds[pick(seeds.size())];
        if (!other.empty()) {
          const size_t at = pick(other.size());
          input.insert(pick(input.size() + 1), other.substr(at, 1 + pick(64)));
        }
        break;
      }
      case 4:  // repeat a chunk
        if (!input.empty()) {
          const size_t at = pick(input.size());
          const std::string chunk = input.substr(at, 1 + pick(16));
          input.insert(at, chunk);
        }
        break;
      default:  // new control byte
        if (!input.empty()) input[0] = static_cast<char>(rng());
    }
  }
  return input;
}

}  // namespace

int main(int argc, char** argv) {
  LLVMFuzzerInitialize(&argc, &argv);
  const char* seconds_text = std::getenv("LONGCTX_FUZZ_SECONDS");
  const double seconds = seconds_text ? std::atof(seconds_text) : 5.0;
  const char* seed_text = std::getenv("LONGCTX_FUZZ_SEED");
  std::mt19937 rng(seed_text ? static_cast<uint32_t>(std::atoi(seed_text)) : 1u);

  std::vector<std::string> seeds = {"", "\x01", "<", "\xFF\xFE"};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    std::string content = read_file(argv[i + 1]);
    if (flag == "--file") {
      seeds.push_back(std::string(1, static_cast<char>(rng())) + content);
    } else if (flag == "--strings") {
      std::vector<std::string> strings;
      collect_strings(nlohmann::json::parse(content), strings);
      for (const std::string& s : strings)
        seeds.push_back(std::string(1, static_cast<char>(rng())) + s);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }

  const auto run = [](const std::string& input) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  };
  for (const std::string& seed : seeds)
    run(seed);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  size_t runs = seeds.size();
  while (std::chrono::steady_clock::now() < deadline) {
    for (int batch = 0; batch < 16; ++batch, ++runs) {
      if (rng() % 8 == 0) {
        std::string random(rng() % 512, '\0');
        for (char& c : random)
          c = static_cast<char>(rng());
        run(random);
      } else {
        run(mutate(seeds[rng() % seeds.size()], seeds, rng));
      }
    }
  }
  std::printf("%zu inputs (%zu seeds) in %.1f s, no failure\n", runs, seeds.size(), seconds);
  return 0;
}
