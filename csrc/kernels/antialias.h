// Analytic antialiasing (spec §3.8, §3.9, §4.5) and its edge topology hash, torch-free.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "texture_common.cuh"

// Topology hash: open addressing with linear probing. Slot = (edge key, (triangle, opposite vertex)).
// The key of edge (a, b) is (min << 32) | max; empty slots hold NVDR_SKIP_KEY. Every triangle edge has
// its own slot, so an edge shared by k triangles occupies k slots of one probe chain.
struct AntialiasHash {
  // [2 * capacity] 64-bit words: slot s holds its edge key in word 2s and its (triangle index, opposite
  // vertex index) int32 pair in word 2s + 1, so that a probe touches one 16-byte line.
  uint64_t* slots;
  int64_t capacity;  // power of two
};

// Capacity for T triangles (at least twice the number of edges, power of two, >= 64).
int64_t antialias_hash_capacity(int64_t T);
// Fills the hash (slot memory provided by the caller), then, when nbr is not null,
// the neighbour table nbr[3T]: for edge e = (v[e], v[(e+1)%3]) of triangle t, the opposite vertex of the
// lowest-index other triangle with that edge, or -1 without one. Pixels then look an edge up in one load.
cudaError_t antialias_build_hash_cuda(const int* tri, int64_t T, AntialiasHash h, int* nbr, cudaStream_t stream);

struct AntialiasParams {
  const float* color;  // [N, H, W, C]
  const float* rast;   // [N, H, W, 4]
  const float* pos;    // [N, V, 4] (pos_batched) or [V, 4]
  const int* tri;      // [T, 3]
  int64_t N, H, W, C, V, T;
  int pos_batched;
  AntialiasHash hash;
  const int* nbr;      // [T * 3] neighbour table (see antialias_build_hash_cuda)
  float* out;          // forward output, like color

  const float* dy;     // backward input, like color, read with element strides dy_s (n, h, w, c)
  int64_t dy_s[4];
  int dy_contig;       // 1: dy is dense (dy_s unused)
  float* grad_color;   // like color
  float* grad_pos;     // like pos
  float pos_gradient_boost;
};

// Forward; also fills `work` ([N, H, W, 2] floats: the signed blend weights of the items each pixel
// forms with its right and upper neighbour, 2.0 where there is none) for the backward. When grad_items
// is not null (room for 1 + 2 N H W uint32, which must be < 2^32), only pixel pairs with different
// triangle ids are evaluated (compacted first), and grad_items receives the count, then the codes
// (2 pixel + direction) of the accepted items that carry a position gradient.
cudaError_t antialias_fwd_cuda(const AntialiasParams& p, float* work, uint32_t* grad_items, const NvdrAllocator& alloc,
                               cudaStream_t stream);
// Backward; `work` from the forward, or nullptr to evaluate the items again. grad_items from the forward
// (or nullptr) limits the position-gradient pass to those items (non-deterministic mode).
cudaError_t antialias_bwd_cuda(const AntialiasParams& p, const float* work, const uint32_t* grad_items,
                               int deterministic, const NvdrAllocator& alloc, cudaStream_t stream);
