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
// Fills the hash (slot memory provided by the caller), then the neighbour table nbr[3T]: for edge
// e = (v[e], v[(e+1)%3]) of triangle t, the opposite vertex of the lowest-index other triangle with that
// edge, or -1 without one. Pixels then look an edge up in one load. gate (optional): one int of device
// memory for later refreshes, zeroed here.
cudaError_t antialias_build_hash_cuda(const int* tri, int64_t T, AntialiasHash h, int* nbr, int* gate,
                                      cudaStream_t stream);
// Same result for a hash/nbr pair built earlier from the triangles now in tri_copy: the device compares
// tri with tri_copy and rebuilds (and updates tri_copy) only if they differ, with no host
// synchronization. gate: the int zeroed by the build; epoch: a value this gate has not seen (not 0),
// e.g. a counter incremented per refresh.
cudaError_t antialias_refresh_hash_cuda(const int* tri, int* tri_copy, int64_t T, AntialiasHash h, int* nbr,
                                        int* gate, int epoch, cudaStream_t stream);

struct AntialiasParams {
  const float* color;  // [N, H, W, C]
  const float* rast;   // [N, H, W, 4]
  const float* pos;    // [N, V, 4] (pos_batched) or [V, 4]
  const int* tri;      // [T, 3]
  int64_t N, H, W, C, V, T;
  int pos_batched;
  const int* nbr;      // [T * 3] neighbour table (see antialias_build_hash_cuda); only the forward and a
                       // backward without saved forward state read it
  const uint8_t* sil;  // internal: per image (one for unbatched pos) and triangle, bit e = edge e is a
                       // silhouette; set by the kernels' host code, leave nullptr
  const double2* proj; // internal, with sil: the three projected vertices of each (image, triangle)
  float* out;          // forward output, like color

  const float* dy;     // backward input, like color, read with element strides dy_s (n, h, w, c)
  int64_t dy_s[4];
  int dy_contig;       // 1: dy is dense (dy_s unused)
  float* grad_color;   // like color
  float* grad_pos;     // like pos
  float pos_gradient_boost;
};

// What the forward leaves for the backward. Each pixel P forms up to two items, with its right (q = 0)
// and its upper (q = 1) neighbour. flags[P] bit q: that item was accepted; bit 2 + q: it also carries a
// position gradient (0 < crossing < 1). alpha[P].q (x for q = 0, y for q = 1) is the item's signed blend
// weight, written only where bit q is set. grad_items (optional; room for 1 + 2 N H W uint32, which must
// be < 2^32): the count, then the codes (2 pixel + q) of the items with a position gradient.
enum : uint8_t { NVDR_AA_RIGHT = 1, NVDR_AA_UP = 2, NVDR_AA_RIGHT_GRAD = 4, NVDR_AA_UP_GRAD = 8 };

cudaError_t antialias_fwd_cuda(const AntialiasParams& p, uint8_t* flags, float* alpha, uint32_t* grad_items,
                               const NvdrAllocator& alloc, cudaStream_t stream);
// Backward. flags/alpha from the forward, or nullptr to evaluate the items again (needs p.nbr).
// grad_items from the forward (or nullptr) limits the position-gradient pass to those items
// (non-deterministic mode). With saved forward state the topology is not read.
cudaError_t antialias_bwd_cuda(const AntialiasParams& p, const uint8_t* flags, const float* alpha,
                               const uint32_t* grad_items, int deterministic, const NvdrAllocator& alloc,
                               cudaStream_t stream);
