// The tokenize / detokenize subcommands and make-test-model's tokenizer, run as a user would.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <unistd.h>

#include "text/tokenizer.h"
#include "text_test_util.h"

namespace longctx::text {
namespace {

namespace fs = std::filesystem;

struct CliRun {
  int exit_code;
  std::string out;
  std::string err;
};

// Runs `longctx ARGS` through the shell; ARGS must already be quoted.
CliRun run_cli(const std::string& args, const std::string& input = "") {
  const fs::path dir = fs::temp_directory_path();
  const std::string tag = std::to_string(::getpid());
  const fs::path out = dir / ("longctx_cli_out_" + tag);
  const fs::path err = dir / ("longctx_cli_err_" + tag);
  const fs::path in = dir / ("longctx_cli_in_" + tag);
  std::ofstream(in) << input;
  const std::string command = std::string(LONGCTX_CLI_PATH) + " " + args + " < " + in.string() +
                              " > " + out.string() + " 2> " + err.string();
  const int status = std::system(command.c_str());
  const auto slurp = [](const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    std::ostringstream text;
    text << file.rdbuf();
    return text.str();
  };
  CliRun run{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  fs::remove(out);
  fs::remove(err);
  fs::remove(in);
  return run;
}

class TextCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("longctx_cli_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

std::string ids_line(const std::vector<int32_t>& ids) {
  std::string line;
  for (const int32_t id : ids)
    line += (line.empty() ? "" : " ") + std::to_string(id);
  return line + "\n";
}

TEST_F(TextCli, TestModelGetsATokenizerThatTokenizeUses) {
  const CliRun made = run_cli("make-test-model " + dir_.string());
  ASSERT_EQ(made.exit_code, 0) << made.err;
  const auto tokenizer = Tokenizer::load(dir_.string());
  EXPECT_EQ(tokenizer->vocab_size(), 1024u);  // the tiny preset's vocabulary

  const CliRun hello = run_cli("tokenize --model " + dir_.string() + " --ids-only Hello");
  ASSERT_EQ(hello.exit_code, 0) << hello.err;
  EXPECT_EQ(hello.out, ids_line(tokenizer->encode("Hello", true)));

  const std::string text = "Hello, longctx! <｜User｜>你好 🤖";
  const std::vector<int32_t> ids = tokenizer->encode(text, true);
  const CliRun both = run_cli("tokenize --model " + dir_.string() + " --ids-only '" + text + "'");
  EXPECT_EQ(both.out, ids_line(ids));
  const CliRun plain =
      run_cli("tokenize --model " + dir_.string() + " --ids-only --no-special '" + text + "'");
  EXPECT_EQ(plain.out, ids_line(tokenizer->encode(text, false)));

  const CliRun table = run_cli("tokenize --model " + dir_.string() + " Hello world");
  EXPECT_NE(table.out.find("\t\"Hello\"\t\"Hello\"\n"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("bytes\n"), std::string::npos);

  std::string ids_arguments = ids_line(ids);
  ids_arguments.pop_back();  // the newline would end the shell command
  const CliRun back = run_cli("detokenize --model " + dir_.string() + " " + ids_arguments);
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_EQ(back.out, text + "\n");
  const CliRun from_stdin = run_cli("detokenize --model " + dir_.string(), ids_line(ids));
  EXPECT_EQ(from_stdin.out, text + "\n");
  const std::string hello_id = std::to_string(*tokenizer->token_id("Hello"));
  const CliRun streamed =
      run_cli("detokenize --model " + dir_.string() + " --stream 0 " + hello_id + " 1");
  EXPECT_EQ(streamed.out,
            "\"<｜begin▁of▁sentence｜>\"\n\"Hello\"\n\"<｜end▁of▁sentence｜>\"\n\"\"\n");
  const CliRun skipping =
      run_cli("detokenize --model " + dir_.string() + " --skip-special 0 " + hello_id + " 1");
  EXPECT_EQ(skipping.out, "Hello\n");
}

TEST_F(TextCli, TokenizerFilesAloneAreEnough) {
  fs::create_directories(dir_);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(testing::text_test_path(std::string("fixtures/test_tokenizer/") + file),
                  dir_ / file);
  }
  const CliRun run = run_cli("tokenize --model " + dir_.string() + " --ids-only Hello");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, ids_line(testing::fixture_test_tokenizer().encode("Hello", true)));
}

TEST_F(TextCli, ErrorsAreReported) {
  const CliRun missing = run_cli("tokenize --model " + dir_.string() + " Hello");
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.err.find("tokenizer.json does not exist"), std::string::npos) << missing.err;
  const std::string model = testing::text_test_path("fixtures/test_tokenizer");
  const CliRun no_text = run_cli("tokenize --model " + model);
  EXPECT_EQ(no_text.exit_code, 1);
  EXPECT_NE(no_text.err.find("expected the text to tokenize"), std::string::npos);
  const CliRun bad_id = run_cli("detokenize --model " + model + " 12 x7");
  EXPECT_EQ(bad_id.exit_code, 1);
  EXPECT_NE(bad_id.err.find("'x7' is not a token id"), std::string::npos) << bad_id.err;
  const CliRun out_of_range = run_cli("detokenize --model " + model + " 1024");
  EXPECT_NE(out_of_range.err.find("token id 1024 is outside the vocabulary (0..1023)"),
            std::string::npos)
      << out_of_range.err;
}

}  // namespace
}  // namespace longctx::text
