#include "server/inflight_registry.h"

namespace longctx::server {

InflightRegistry::Ticket& InflightRegistry::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    release();
    registry_ = other.registry_;
    key_ = other.key_;
    other.registry_ = nullptr;
  }
  return *this;
}

void InflightRegistry::Ticket::release() {
  if (registry_) registry_->remove(key_);
  registry_ = nullptr;
}

InflightRegistry::Ticket InflightRegistry::add(std::shared_ptr<RequestHandle> handle) {
  std::lock_guard<std::mutex> lock(mutex_);
  const uint64_t key = next_key_++;
  handles_.emplace(key, std::move(handle));
  return Ticket(this, key);
}

int64_t InflightRegistry::count() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(handles_.size());
}

void InflightRegistry::abort_all() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [key, handle] : handles_)
    handle->abort();
}

bool InflightRegistry::wait_until_empty(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  return emptied_.wait_until(lock, deadline, [&] { return handles_.empty(); });
}

void InflightRegistry::remove(uint64_t key) {
  std::lock_guard<std::mutex> lock(mutex_);
  handles_.erase(key);
  if (handles_.empty()) emptied_.notify_all();
}

}  // namespace longctx::server
