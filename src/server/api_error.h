// Errors of the HTTP API, in OpenAI's shape {"error": {"message", "type", "param", "code"}} and
// with the HTTP status that goes with them. Request parsing throws them; the server turns them
// into responses. A client mistake is always a 4xx: 500 is kept for failures of the server.
#pragma once

#include <string>

#include "longctx/error.h"
#include "text/python_json.h"

namespace longctx::server {

using text::OrderedJson;

class ApiError : public Error {
 public:
  // `param` names the request field at fault ("" when none); `code` is OpenAI's short
  // machine-readable code ("" for null).
  ApiError(int status, std::string type, const std::string& message, std::string param = "",
           std::string code = "");

  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

  // {"error": {...}}
  OrderedJson to_json() const;

 private:
  int status_;
  std::string type_;
  std::string param_;
  std::string code_;
};

// 400: a field of the request is missing, has the wrong type or an invalid value.
ApiError invalid_field(const std::string& param, const std::string& message);
// 400 without a field to blame (the body is not JSON, the prompt is too long, ...).
ApiError invalid_request(const std::string& message, const std::string& code = "");
// 404 for a model name this server does not serve.
ApiError model_not_found(const std::string& model);
// 500: the server failed; never used for a client mistake.
ApiError server_failure(const std::string& message);

// The default message and type for an HTTP error status that no handler described (unknown
// path, body too large, ...).
ApiError error_for_status(int status, const std::string& method, const std::string& path);

}  // namespace longctx::server
