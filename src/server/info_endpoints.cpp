// The endpoints around generation: models, health, metrics, version, tokenize, detokenize.
#include "server/json_fields.h"
#include "server/prometheus_metrics.h"
#include "server/server_state.h"
#include "text/tokenizer.h"

namespace longctx::server {
namespace {

OrderedJson model_card(const ServerState& state, const std::string& name) {
  return OrderedJson{{"id", name},
                     {"object", "model"},
                     {"created", state.started_at},
                     {"owned_by", "longctx"},
                     {"root", state.options.model_root},
                     {"parent", nullptr},
                     {"max_model_len", state.limits.max_model_len}};
}

const text::Tokenizer& require_tokenizer(const ServerState& state) {
  if (!state.tokenizer) throw invalid_request("the served model has no tokenizer");
  return *state.tokenizer;
}

}  // namespace

void handle_models(ServerState& state, const HttpCall&, httplib::Response& response) {
  OrderedJson data = OrderedJson::array();
  for (const std::string& name : state.options.served_model_names)
    data.push_back(model_card(state, name));
  send_json(response, 200, OrderedJson{{"object", "list"}, {"data", std::move(data)}});
}

void handle_model(ServerState& state, const HttpCall& call, httplib::Response& response) {
  const std::string name = call.request.matches.size() > 1 ? call.request.matches[1].str() : "";
  for (const std::string& served : state.options.served_model_names) {
    if (served == name) return send_json(response, 200, model_card(state, served));
  }
  throw model_not_found(name);
}

void handle_health(ServerState& state, const HttpCall&, httplib::Response& response) {
  if (state.draining) throw shutting_down_error();
  response.status = 200;
}

void handle_metrics(ServerState& state, const HttpCall&, httplib::Response& response) {
  ServerCounters counters;
  counters.refused_queue_full = state.refused_queue_full.load();
  counters.refused_shutting_down = state.refused_shutting_down.load();
  counters.client_disconnects = state.client_disconnects.load();
  response.status = 200;
  response.set_content(render_prometheus(state.engine->metrics(), counters,
                                         state.options.served_model_names.front()),
                       kPrometheusContentType);
}

void handle_version(ServerState&, const HttpCall&, httplib::Response& response) {
  send_json(response, 200, OrderedJson{{"version", LONGCTX_VERSION}});
}

// vLLM's /tokenize: {"prompt": TEXT} or a chat request's {"messages": [...], ...}.
void handle_tokenize(ServerState& state, const HttpCall& call, httplib::Response& response) {
  const OrderedJson body = parse_request_body(call.body);
  state.resolve_model(requested_model(body));
  const text::Tokenizer& tokenizer = require_tokenizer(state);
  const FieldReader fields(body);
  std::vector<int32_t> tokens;
  if (fields.has("messages")) {
    tokens = tokenizer.encode(render_chat_prompt(body).text, /*allow_special=*/true);
  } else if (const auto prompt = fields.string("prompt")) {
    tokens = tokenizer.encode(*prompt, /*allow_special=*/true);
    if (fields.boolean("add_special_tokens").value_or(true) && tokenizer.bos_id() >= 0 &&
        (tokens.empty() || tokens[0] != tokenizer.bos_id())) {
      tokens.insert(tokens.begin(), tokenizer.bos_id());
    }
  } else {
    throw invalid_field("prompt", "give prompt (a string) or messages (a chat)");
  }
  OrderedJson token_strs = nullptr;
  if (fields.boolean("return_token_strs").value_or(false)) {
    token_strs = OrderedJson::array();
    for (const int32_t token : tokens) {
      const std::string* text = tokenizer.token_text(token);
      token_strs.push_back(text ? *text : std::string());
    }
  }
  send_json(response, 200,
            OrderedJson{{"count", tokens.size()},
                        {"max_model_len", state.limits.max_model_len},
                        {"tokens", tokens},
                        {"token_strs", std::move(token_strs)}});
}

void handle_detokenize(ServerState& state, const HttpCall& call, httplib::Response& response) {
  const OrderedJson body = parse_request_body(call.body);
  state.resolve_model(requested_model(body));
  const text::Tokenizer& tokenizer = require_tokenizer(state);
  const FieldReader fields(body);
  const OrderedJson* ids = fields.array("tokens");
  if (!ids) throw invalid_field("tokens", "tokens is required: an array of token ids");
  std::vector<int32_t> tokens;
  for (size_t i = 0; i < ids->size(); ++i) {
    const OrderedJson& id = (*ids)[i];
    if (!id.is_number_integer()) {
      throw invalid_field(
          "tokens", str_cat("tokens[", i, "] must be an integer token id, found ", json_type_name(id)));
    }
    if (id.get<int64_t>() < 0 || id.get<int64_t>() >= state.limits.vocab_size) {
      throw invalid_field("tokens",
                          str_cat("tokens[", i, "] = ", id.get<int64_t>(),
                                  " is outside the vocabulary [0, ", state.limits.vocab_size, ")"));
    }
    tokens.push_back(static_cast<int32_t>(id.get<int64_t>()));
  }
  send_json(response, 200, OrderedJson{{"prompt", tokenizer.decode(tokens)}});
}

}  // namespace longctx::server
