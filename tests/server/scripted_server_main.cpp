// scripted_server MODEL_DIR: the OpenAI server over ScriptedEngine (weather_script) on a free
// loopback port, for the Node tests that check tool calls with OpenAI's client. Prints
// "listening on URL" and serves until SIGINT / SIGTERM.
#include <csignal>
#include <cstdio>

#include "scripted_engine.h"
#include "server/http_server.h"
#include "text/tokenizer.h"

int main(int argc, char** argv) {
  using namespace longctx;
  if (argc != 2) {
    std::fprintf(stderr, "usage: scripted_server MODEL_DIR\n");
    return 2;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  try {
    std::shared_ptr<const text::Tokenizer> tokenizer = text::Tokenizer::load(argv[1]);
    auto engine = std::make_shared<testing::ScriptedEngine>(tokenizer, testing::weather_script);
    server::ServerOptions options;
    options.port = 0;
    options.served_model_names = {"scripted"};
    options.vocab_size = 1024;
    options.keep_alive_timeout_seconds = 1;  // shutdown waits for idle connections this long
    server::OpenAiServer server(engine, tokenizer, options);
    server.start();
    std::printf("scripted_server: listening on %s\n", server.url().c_str());
    std::fflush(stdout);
    int signal = 0;
    sigwait(&signals, &signal);
    server.shutdown(std::chrono::seconds(5));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "scripted_server: %s\n", error.what());
    return 1;
  }
  return 0;
}
