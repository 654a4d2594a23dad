#include "bench_serve_client.h"

#include <httplib.h>

#include <algorithm>
#include <optional>

#include <nlohmann/json.hpp>

#include "bench_serve_sse.h"
#include "longctx/error.h"

namespace longctx::cli {
namespace {

using Json = nlohmann::json;

// Error bodies are kept only as far as a one-line report needs.
constexpr size_t kErrorBodyLimit = 4096;
constexpr size_t kQuotedTextLimit = 200;
// Connecting should be quick even when generation is slow: an unreachable server is reported
// within this, not after the whole --timeout.
constexpr double kMaxConnectSeconds = 30.0;

double seconds(BenchClock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

std::string clip(std::string_view text) {
  std::string line(text.substr(0, kQuotedTextLimit));
  std::replace(line.begin(), line.end(), '\n', ' ');
  return text.size() > kQuotedTextLimit ? line + "..." : line;
}

// The message of an error body: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or the
// text itself.
std::string error_message(const std::string& body) {
  const Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_object()) {
    const auto error = parsed.find("error");
    if (error != parsed.end()) {
      if (error->is_string()) return error->get<std::string>();
      if (error->is_object() && error->contains("message") && (*error)["message"].is_string())
        return (*error)["message"].get<std::string>();
    }
    for (const char* key : {"message", "detail"}) {
      if (parsed.contains(key) && parsed[key].is_string()) return parsed[key].get<std::string>();
    }
  }
  return body.empty() ? "(empty body)" : clip(body);
}

std::string describe(httplib::Error error) {
  switch (error) {
    case httplib::Error::Connection:
      return "cannot connect (refused, or no route to the host)";
    case httplib::Error::ConnectionTimeout:
      return "connecting timed out";
    case httplib::Error::Read:
      return "the connection broke or went silent while reading the response";
    case httplib::Error::Write:
      return "the connection broke while sending the request";
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLLoadingCerts:
    case httplib::Error::SSLServerVerification:
      return "TLS failed (" + httplib::to_string(error) + ")";
    default:
      return "HTTP client error " + httplib::to_string(error);
  }
}

bool non_empty_string(const Json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() && !it->get_ref<const std::string&>().empty();
}

// Whether a stream chunk brings output: completion text, or chat content, reasoning or tool
// calls. Role-only and finish-only chunks bring none.
bool carries_output(const Json& chunk, ServeApi api) {
  const auto choices = chunk.find("choices");
  if (choices == chunk.end() || !choices->is_array()) return false;
  for (const Json& choice : *choices) {
    if (!choice.is_object()) continue;
    if (api == ServeApi::kCompletions) {
      if (non_empty_string(choice, "text")) return true;
      continue;
    }
    const auto delta = choice.find("delta");
    if (delta == choice.end() || !delta->is_object()) continue;
    if (non_empty_string(*delta, "content") || non_empty_string(*delta, "reasoning_content") ||
        non_empty_string(*delta, "reasoning"))
      return true;
    const auto tool_calls = delta->find("tool_calls");
    if (tool_calls != delta->end() && tool_calls->is_array() && !tool_calls->empty()) return true;
  }
  return false;
}

std::optional<int64_t> integer_field(const Json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

}  // namespace

BenchServeClient::BenchServeClient(const BenchServeOptions& options, std::string model)
    : options_(options),
      model_(std::move(model)),
      http_(std::make_unique<httplib::Client>(options.server.scheme_host_port)) {
  if (!http_->is_valid()) fail("cannot use the server URL '", options.server.scheme_host_port, "'");
  const auto timeout = std::chrono::duration<double>(options.timeout_seconds);
  const auto connect =
      std::chrono::duration<double>(std::min(options.timeout_seconds, kMaxConnectSeconds));
  http_->set_connection_timeout(std::chrono::duration_cast<std::chrono::microseconds>(connect));
  http_->set_read_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  http_->set_write_timeout(std::chrono::duration_cast<std::chrono::microseconds>(timeout));
  http_->set_keep_alive(true);
  http_->set_tcp_nodelay(true);
  if (!options.api_key.empty()) http_->set_bearer_token_auth(options.api_key);
}

BenchServeClient::~BenchServeClient() = default;

std::vector<std::string> BenchServeClient::list_models() {
  const std::string path = options_.server.path_prefix + "/v1/models";
  const std::string url = options_.server.scheme_host_port + path;
  const httplib::Result result = http_->Get(path);
  if (!result) fail("cannot reach the server at ", url, ": ", describe(result.error()));
  if (result->status != 200)
    fail("GET ", url, " answered HTTP ", result->status, ": ", error_message(result->body));
  const Json list = Json::parse(result->body, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> ids;
  if (list.is_object() && list.contains("data") && list["data"].is_array()) {
    for (const Json& model : list["data"]) {
      if (model.is_object() && model.contains("id") && model["id"].is_string())
        ids.push_back(model["id"].get<std::string>());
    }
  } else {
    fail("GET ", url, " did not answer an OpenAI model list: ", clip(result->body));
  }
  return ids;
}

std::string BenchServeClient::request_body(const BenchPrompt& prompt) const {
  Json body;
  body["model"] = model_;
  if (options_.api == ServeApi::kCompletions) {
    body["prompt"] = prompt.token_ids;
    body["max_tokens"] = prompt.output_len;
  } else {
    body["messages"] = Json::array({{{"role", "user"}, {"content", prompt.text}}});
    body["max_completion_tokens"] = prompt.output_len;
  }
  body["temperature"] = options_.temperature;
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  if (options_.ignore_eos) body["ignore_eos"] = true;
  if (!options_.extra_body_json.empty()) body.update(Json::parse(options_.extra_body_json));
  return body.dump();
}

RequestRecord BenchServeClient::send(const BenchPrompt& prompt, BenchClock::time_point epoch) {
  const std::string body = request_body(prompt);
  const bool connection_was_reused = connection_reused_;
  bool broke_before_response = false;
  RequestRecord record = send_once(body, epoch, &broke_before_response);
  // A kept-alive connection the server closed while it sat idle breaks before any answer;
  // that is the connection's fault, not the request's, so the request goes again on a new one.
  if (broke_before_response && connection_was_reused)
    record = send_once(body, epoch, &broke_before_response);
  if (!record.usage_reported) record.input_tokens = prompt.input_len;
  return record;
}

RequestRecord BenchServeClient::send_once(const std::string& body, BenchClock::time_point epoch,
                                          bool* broke_before_response) {
  RequestRecord record;
  httplib::Request request;
  request.method = "POST";
  request.path = options_.server.path_prefix + options_.endpoint;
  request.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
  request.body = body;

  bool response_started = false;
  bool done = false;
  std::string error_body;
  std::string stream_error;  // set when reading stops early
  std::optional<BenchClock::time_point> last_output;
  SseDataReader sse;
  const BenchClock::time_point start = BenchClock::now();
  const auto deadline = start + std::chrono::duration_cast<BenchClock::duration>(
                                    std::chrono::duration<double>(options_.timeout_seconds));

  const auto on_event = [&](std::string_view data, BenchClock::time_point arrived) {
    if (data == "[DONE]") {
      done = true;
      return true;
    }
    const Json chunk = Json::parse(data, nullptr, /*allow_exceptions=*/false);
    if (!chunk.is_object()) {
      stream_error = "a stream event is not a JSON object: " + clip(data);
      return false;
    }
    if (chunk.contains("error") && !chunk["error"].is_null()) {
      stream_error = "the stream reported an error: " + error_message(std::string(data));
      return false;
    }
    const auto usage = chunk.find("usage");
    if (usage != chunk.end() && usage->is_object()) {
      const auto prompt_tokens = integer_field(*usage, "prompt_tokens");
      const auto completion_tokens = integer_field(*usage, "completion_tokens");
      if (prompt_tokens && completion_tokens) {
        record.input_tokens = *prompt_tokens;
        record.output_tokens = *completion_tokens;
        record.usage_reported = true;
      }
    }
    if (carries_output(chunk, options_.api)) {
      if (last_output)
        record.itl_s.push_back(seconds(arrived - *last_output));
      else
        record.ttft_s = seconds(arrived - start);
      last_output = arrived;
      ++record.output_chunks;
    }
    return true;
  };
  request.response_handler = [&](const httplib::Response& response) {
    response_started = true;
    record.http_status = response.status;
    return true;
  };
  request.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    const BenchClock::time_point arrived = BenchClock::now();
    if (arrived > deadline) {
      stream_error = str_cat("timed out after ", options_.timeout_seconds, " s");
      return false;
    }
    if (record.http_status != 200) {
      error_body.append(
          data, std::min(size, kErrorBodyLimit - std::min(kErrorBodyLimit, error_body.size())));
      return true;
    }
    return sse.feed(std::string_view(data, size),
                    [&](std::string_view event) { return on_event(event, arrived); });
  };

  httplib::Response response;
  httplib::Error error = httplib::Error::Success;
  const bool answered = http_->send(request, response, error);
  const BenchClock::time_point end = BenchClock::now();
  if (answered && record.http_status == 200 && stream_error.empty())
    sse.finish([&](std::string_view event) { return on_event(event, end); });
  record.start_s = seconds(start - epoch);
  record.e2el_s = seconds(end - start);
  connection_reused_ = answered;
  *broke_before_response = !answered && !response_started &&
                           (error == httplib::Error::Read || error == httplib::Error::Write);

  record.stream_completed = stream_error.empty() && answered && record.http_status == 200 && done;
  if (!stream_error.empty()) {
    record.error = stream_error;
  } else if (!answered) {
    record.error = end >= deadline ? str_cat("timed out after ", options_.timeout_seconds, " s")
                                   : describe(error);
  } else if (record.http_status != 200) {
    record.error = str_cat("HTTP ", record.http_status, ": ", error_message(error_body));
  } else if (!done) {
    record.error = "the stream ended before \"data: [DONE]\"";
  } else if (record.output_chunks == 0) {
    record.error = "the stream carried no output";
  } else {
    record.success = true;
    if (!record.usage_reported) record.output_tokens = record.output_chunks;
  }
  return record;
}

}  // namespace longctx::cli
