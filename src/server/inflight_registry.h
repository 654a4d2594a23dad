// The generation requests the server has handed to the engine and not finished answering, so
// that shutdown can wait for them or abort them.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "longctx/engine.h"

namespace longctx::server {

class InflightRegistry {
 public:
  // Unregisters its request when destroyed.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(InflightRegistry* registry, uint64_t key) : registry_(registry), key_(key) {}
    Ticket(Ticket&& other) noexcept : registry_(other.registry_), key_(other.key_) {
      other.registry_ = nullptr;
    }
    Ticket& operator=(Ticket&& other) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { release(); }

   private:
    void release();
    InflightRegistry* registry_ = nullptr;
    uint64_t key_ = 0;
  };

  Ticket add(std::shared_ptr<RequestHandle> handle);
  int64_t count() const;
  void abort_all();
  // Waits until no request is registered or `deadline` passes; true when none is left.
  bool wait_until_empty(std::chrono::steady_clock::time_point deadline);

 private:
  void remove(uint64_t key);

  mutable std::mutex mutex_;
  std::condition_variable emptied_;
  std::map<uint64_t, std::shared_ptr<RequestHandle>> handles_;
  uint64_t next_key_ = 1;
};

}  // namespace longctx::server
