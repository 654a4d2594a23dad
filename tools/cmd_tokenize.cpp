// longctx tokenize --model DIR TEXT: the ids (and tokens) the model's tokenizer gives TEXT.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "args.h"
#include "command.h"
#include "common/mapped_file.h"
#include "longctx/error.h"
#include "text/python_json.h"
#include "text/tokenizer.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx tokenize --model DIR [options] TEXT...

Encodes TEXT (the arguments joined by spaces) with the tokenizer in DIR: tokenizer.json and,
when present, tokenizer_config.json (a model folder, or a folder with just those two files).
Prints one line per token: id, the token as the vocabulary stores it, and its text.
  --ids-only       print only the ids, space-separated, on one line
  --no-special     encode special-token text such as <｜User｜> as plain text
  --file PATH      read the text from PATH ("-" for standard input) instead of the arguments
)";

constexpr size_t kMaxInputBytes = size_t{1} << 30;

std::string read_input(const Args& args) {
  if (const auto path = args.get("file")) {
    if (!args.positional().empty()) fail("give the text either as arguments or with --file");
    if (*path == "-") {
      return std::string(std::istreambuf_iterator<char>(std::cin),
                         std::istreambuf_iterator<char>());
    }
    return read_text_file(*path, kMaxInputBytes);
  }
  if (args.positional().empty()) fail("expected the text to tokenize\n", kHelp);
  std::string text;
  for (const std::string& part : args.positional()) {
    if (!text.empty()) text.push_back(' ');
    text.append(part);
  }
  return text;
}

int run(const std::vector<std::string>& argv) {
  const Args args(argv, {"help", "ids-only", "no-special"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  args.check_known({"help", "model", "ids-only", "no-special", "file"});
  const auto tokenizer = text::Tokenizer::load(args.require("model"));
  const std::string input = read_input(args);
  const std::vector<int32_t> ids = tokenizer->encode(input, !args.has("no-special"));

  if (args.has("ids-only")) {
    std::string line;
    for (const int32_t id : ids) {
      if (!line.empty()) line.push_back(' ');
      line.append(std::to_string(id));
    }
    std::printf("%s\n", line.c_str());
    return 0;
  }
  for (const int32_t id : ids) {
    const std::string* token = tokenizer->token_text(id);
    std::string token_json;
    text::append_python_json_string(token_json, token ? *token : "");
    std::string text_json;
    text::append_python_json_string(text_json, tokenizer->decode(std::vector<int32_t>{id}));
    std::printf("%d\t%s\t%s\n", id, token_json.c_str(), text_json.c_str());
  }
  std::printf("%zu tokens, %zu bytes\n", ids.size(), input.size());
  return 0;
}

const CommandRegistration kRegistration("tokenize", "print the token ids of a text", run);

}  // namespace
}  // namespace longctx::cli
