// Scratch memory handed to the torch-free kernels (NvdrAllocator): torch tensors from the caching
// allocator, kept alive until the op returns, so frees stay stream-ordered and no cudaMalloc happens.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <vector>

#include "kernels/texture_common.cuh"

namespace nvdr {

struct Scratch {
  at::Device device;
  std::vector<at::Tensor> keep;
  explicit Scratch(at::Device d) : device(d) {}
  static void* alloc(void* self, size_t bytes) {
    auto* s = static_cast<Scratch*>(self);
    s->keep.push_back(at::empty({(int64_t)bytes}, at::TensorOptions().dtype(at::kByte).device(s->device)));
    return s->keep.back().data_ptr();
  }
  NvdrAllocator handle() { return NvdrAllocator{&Scratch::alloc, this}; }
};

}  // namespace nvdr
