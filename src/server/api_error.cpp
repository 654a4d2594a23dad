#include "server/api_error.h"

namespace longctx::server {

ApiError::ApiError(int status, std::string type, const std::string& message, std::string param,
                   std::string code)
    : Error(message),
      status_(status),
      type_(std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

OrderedJson ApiError::to_json() const {
  OrderedJson error = OrderedJson::object();
  error["message"] = what();
  error["type"] = type_;
  error["param"] = param_.empty() ? OrderedJson() : OrderedJson(param_);
  error["code"] = code_.empty() ? OrderedJson() : OrderedJson(code_);
  return OrderedJson{{"error", std::move(error)}};
}

ApiError invalid_field(const std::string& param, const std::string& message) {
  return ApiError(400, "invalid_request_error", message, param, "invalid_value");
}

ApiError invalid_request(const std::string& message, const std::string& code) {
  return ApiError(400, "invalid_request_error", message, "", code);
}

ApiError model_not_found(const std::string& model) {
  return ApiError(404, "invalid_request_error", str_cat("The model `", model, "` does not exist."),
                  "model", "model_not_found");
}

ApiError server_failure(const std::string& message) {
  return ApiError(500, "server_error", message, "", "internal_error");
}

ApiError error_for_status(int status, const std::string& method, const std::string& path) {
  switch (status) {
    case 400:
      return invalid_request("the request could not be read (malformed HTTP or body)");
    case 404:
      return ApiError(404, "invalid_request_error", str_cat("no route for ", method, " ", path), "",
                      "not_found");
    case 405:
      return ApiError(405, "invalid_request_error",
                      str_cat("method ", method, " is not allowed on ", path), "",
                      "method_not_allowed");
    case 413:
      return ApiError(413, "invalid_request_error",
                      "the request body is larger than the server accepts (see --max-body-mib)", "",
                      "request_too_large");
    default:
      if (status >= 500) return server_failure(str_cat("the server failed with status ", status));
      return ApiError(status, "invalid_request_error",
                      str_cat("request failed with status ", status));
  }
}

}  // namespace longctx::server
