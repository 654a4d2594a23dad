// Host-side CUDA helpers shared by the backend and the tests: error checks that throw
// longctx::Error, and an RAII device buffer. Plain C++ (only cuda_runtime_api.h), so .cpp
// files compiled by the host compiler can use it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "longctx/error.h"

namespace longctx::cuda {

inline void check_cuda(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) {
    fail("CUDA error in ", what, " (", file, ":", line, "): ", cudaGetErrorName(status), ": ",
         cudaGetErrorString(status));
  }
}

#define LONGCTX_CUDA_CHECK(call) ::longctx::cuda::check_cuda((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows up here, not at the next call.
#define LONGCTX_CUDA_CHECK_LAUNCH() \
  ::longctx::cuda::check_cuda(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

// Device memory of `count` elements of T; moves, never copies.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { resize(count); }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), count_(std::exchange(other.count_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      count_ = std::exchange(other.count_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // Discards the contents and allocates exactly `count` elements.
  void resize(size_t count) {
    reset();
    if (count > 0) {
      void* pointer = nullptr;
      LONGCTX_CUDA_CHECK(cudaMalloc(&pointer, count * sizeof(T)));
      data_ = static_cast<T*>(pointer);
      count_ = count;
    }
  }
  // Grows (discarding the contents) when fewer than `count` elements are held.
  void reserve(size_t count) {
    if (count > count_) resize(count);
  }
  void reset() {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    count_ = 0;
  }

  T* data() { return data_; }
  const T* data() const { return data_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }

  void upload(const T* host, size_t count, size_t offset = 0) {
    if (offset + count > count_) fail("DeviceBuffer::upload: ", offset + count, " elements into ", count_);
    LONGCTX_CUDA_CHECK(cudaMemcpy(data_ + offset, host, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  void upload(const std::vector<T>& host) {
    reserve(host.size());
    upload(host.data(), host.size());
  }
  std::vector<T> download(size_t count) const {
    if (count > count_) fail("DeviceBuffer::download: ", count, " elements from ", count_);
    std::vector<T> host(count);
    LONGCTX_CUDA_CHECK(cudaMemcpy(host.data(), data_, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  std::vector<T> download() const { return download(count_); }

 private:
  T* data_ = nullptr;
  size_t count_ = 0;
};

// A device buffer holding a copy of host data.
template <typename T>
DeviceBuffer<T> to_device(const std::vector<T>& host) {
  DeviceBuffer<T> buffer(host.size());
  if (!host.empty()) buffer.upload(host.data(), host.size());
  return buffer;
}

}  // namespace longctx::cuda
