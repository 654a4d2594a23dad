// longctx detokenize --model DIR ID...: the text of token ids.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "args.h"
#include "command.h"
#include "longctx/error.h"
#include "text/python_json.h"
#include "text/tokenizer.h"

namespace longctx::cli {
namespace {

constexpr const char* kHelp = R"(usage: longctx detokenize --model DIR [options] [ID...]

Decodes token ids with the tokenizer in DIR (tokenizer.json + tokenizer_config.json) and prints
the text followed by a newline. Ids are the arguments or, when there are none, standard input;
spaces and commas separate them.
  --skip-special   leave out special tokens (BOS, EOS, padding)
  --stream         decode one id at a time as a server streams, printing each piece of text
                   as a JSON string on its own line (pieces never split a character)
)";

std::vector<int32_t> parse_ids(const std::string& text, size_t vocab_size) {
  std::vector<int32_t> ids;
  size_t at = 0;
  while (at < text.size()) {
    const size_t start = text.find_first_not_of(" ,\t\r\n", at);
    if (start == std::string::npos) break;
    size_t end = text.find_first_of(" ,\t\r\n", start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    size_t used = 0;
    long long value = -1;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size()) fail("'", item, "' is not a token id");
    if (value < 0 || static_cast<unsigned long long>(value) >= vocab_size) {
      fail("token id ", value, " is outside the vocabulary (0..", vocab_size - 1, ")");
    }
    ids.push_back(static_cast<int32_t>(value));
    at = end;
  }
  return ids;
}

int run(const std::vector<std::string>& argv) {
  const Args args(argv, {"help", "skip-special", "stream"});
  if (args.has("help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  args.check_known({"help", "model", "skip-special", "stream"});
  const auto tokenizer = text::Tokenizer::load(args.require("model"));
  std::string input;
  if (args.positional().empty()) {
    input.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    for (const std::string& part : args.positional())
      input.append(part).push_back(' ');
  }
  const std::vector<int32_t> ids = parse_ids(input, tokenizer->vocab_size());
  const bool skip_special = args.has("skip-special");

  if (args.has("stream")) {
    text::StreamingDetokenizer detokenizer(*tokenizer, skip_special);
    const auto print_piece = [](const std::string& piece) {
      std::string line;
      text::append_python_json_string(line, piece);
      std::printf("%s\n", line.c_str());
    };
    for (const int32_t id : ids)
      print_piece(detokenizer.push(id));
    print_piece(detokenizer.flush());
    return 0;
  }
  const std::string text = tokenizer->decode(ids, skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

const CommandRegistration kRegistration("detokenize", "print the text of token ids", run);

}  // namespace
}  // namespace longctx::cli
