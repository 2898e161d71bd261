// Helpers shared by the interpolate, texture and antialias kernels (torch-free).
//  * NvdrAllocator: scratch memory handed in by the binding layer (stream-ordered, freed after the op).
//  * Triangle-id decoding of rast[..., 3] (spec §2.7).
//  * A deterministic "sort, then reduce each key's entries in a fixed order" building block used by the
//    backward passes when torch.use_deterministic_algorithms(True) is set.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include <cstddef>

// Scratch allocator supplied by the caller. Memory stays valid until the op returns and is used only
// on the op's stream. alloc() returns nullptr (or throws) on failure.
struct NvdrAllocator {
  void* (*alloc)(void* self, size_t bytes);
  void* self;
  template <class T>
  T* get(size_t count) const {
    return static_cast<T*>(alloc(self, count * sizeof(T) + 16));
  }
};

#define NVDR_RETURN_IF_ERROR(expr)          \
  do {                                      \
    cudaError_t nvdr_e_ = (expr);           \
    if (nvdr_e_ != cudaSuccess) return nvdr_e_; \
  } while (0)

// Checks the launch just made (configuration errors surface here; faults surface at the next sync).
#define NVDR_RETURN_IF_LAUNCH_ERROR() NVDR_RETURN_IF_ERROR(cudaGetLastError())

static constexpr uint64_t NVDR_SKIP_KEY = ~0ull;

#ifdef __CUDACC__
// Decodes rast[..., 3] into a 0-based triangle index, or -1 for "no triangle" (0, negative, NaN).
// Ids up to 2^24 are stored as exact floats, larger ones as the bit pattern 0x4A800000 + id.
__device__ __forceinline__ int64_t nvdr_decode_tri(float v) {
  if (!(v >= 1.0f)) return -1;
  if (v <= 16777216.0f) return (int64_t)v - 1;
  uint32_t bits = __float_as_uint(v);
  if (bits >= 0x7F800000u) return -1;  // Inf
  return (int64_t)(bits - 0x4A800000u) - 1;
}

// pix / hw, with a 32-bit division when every pixel index fits (several times cheaper than 64-bit).
__device__ __forceinline__ int64_t nvdr_image_of(int64_t pix, int64_t hw, int64_t total) {
  return total <= 0xffffffffll ? (int64_t)((uint32_t)pix / (uint32_t)hw) : pix / hw;
}

// Element offset of pixel `pix` of an [N, H, W, C] image with strides (sn, sh, sw) (non-negative). Lets
// the backward passes read an incoming gradient in place: the gradient of out.sum() is an expanded
// (all-zero-stride) tensor, and a contiguous copy would write a full image for nothing.
__device__ __forceinline__ int64_t nvdr_pixel_offset(int64_t pix, int64_t H, int64_t W, int64_t sn, int64_t sh,
                                                     int64_t sw) {
  if ((sn | sh | sw) == 0) return 0;
  const int64_t x = pix % W, t = pix / W;
  return (t / H) * sn + (t % H) * sh + x * sw;
}

#endif  // __CUDACC__

static inline int nvdr_grid_1d(int64_t work, int block, int cap = 65536 * 8) {
  int64_t g = (work + block - 1) / block;
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return (int)g;
}

// Result of nvdr_sort_segments: entries sorted by key (stable: equal keys keep their entry order),
// and the start positions of the runs of equal keys (skip keys excluded). seg_count lives in device
// memory so that no host synchronization is needed; kernels loop up to max_segments and exit early.
struct NvdrSortedSegments {
  const uint64_t* keys;     // sorted keys [n]
  const uint32_t* order;    // original entry index of each sorted position [n]
  const int* seg_start;     // [max_segments] start positions, in no particular order
  const int* seg_count;     // device scalar
  int64_t n;
  int64_t max_segments;
};

// Stable radix sort of n uint64 keys (keys == NVDR_SKIP_KEY are dropped from the segments).
// max_key bounds the non-skip keys (limits the number of radix passes). n must be < 2^31.
cudaError_t nvdr_sort_segments(const uint64_t* keys, int64_t n, uint64_t max_key, const NvdrAllocator& alloc,
                               cudaStream_t stream, NvdrSortedSegments* out);

#ifdef __CUDACC__
// Finds the end of the segment starting at sorted position `start`.
__device__ __forceinline__ int64_t nvdr_segment_end(const NvdrSortedSegments& s, int64_t start) {
  uint64_t k = s.keys[start];
  int64_t e = start + 1;
  while (e < s.n && s.keys[e] == k) ++e;
  return e;
}
#endif  // __CUDACC__
