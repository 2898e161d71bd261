// Analytic antialiasing (spec §3.8, §3.9, §4.5) and its edge topology hash, torch-free.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "texture_common.cuh"

// Topology hash: open addressing with linear probing. Slot = (edge key, (triangle, opposite vertex)).
// The key of edge (a, b) is (min << 32) | max; empty slots hold NVDR_SKIP_KEY. Every triangle edge has
// its own slot, so an edge shared by k triangles occupies k slots of one probe chain.
struct AntialiasHash {
  uint64_t* keys;  // [capacity]
  int2* vals;      // [capacity]: (triangle index, opposite vertex index)
  int64_t capacity;  // power of two
};

// Capacity for T triangles (at least twice the number of edges, power of two, >= 64).
int64_t antialias_hash_capacity(int64_t T);
// Fills the hash (keys/vals memory provided by the caller, `capacity` slots).
cudaError_t antialias_build_hash_cuda(const int* tri, int64_t T, AntialiasHash h, cudaStream_t stream);

struct AntialiasParams {
  const float* color;  // [N, H, W, C]
  const float* rast;   // [N, H, W, 4]
  const float* pos;    // [N, V, 4] (pos_batched) or [V, 4]
  const int* tri;      // [T, 3]
  int64_t N, H, W, C, V, T;
  int pos_batched;
  AntialiasHash hash;
  float* out;          // forward output, like color

  const float* dy;     // backward input, like color
  float* grad_color;   // like color
  float* grad_pos;     // like pos
  float pos_gradient_boost;
};

// Forward; also fills `work` ([N, H, W, 2] floats: the signed blend weights of the items each pixel
// forms with its right and upper neighbour, 2.0 where there is none) for the backward.
cudaError_t antialias_fwd_cuda(const AntialiasParams& p, float* work, cudaStream_t stream);
// Backward; `work` from the forward, or nullptr to evaluate the items again.
cudaError_t antialias_bwd_cuda(const AntialiasParams& p, const float* work, int deterministic,
                               const NvdrAllocator& alloc, cudaStream_t stream);
