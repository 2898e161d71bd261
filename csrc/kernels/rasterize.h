// CUDA rasterizer (torch-free). Visibility through a 64-bit per-pixel word (depth key in the high
// half, bit-inverted triangle index in the low half) updated with atomicMin: order-independent, so
// the forward pass is deterministic and exact depth ties go to the higher triangle index. Coverage
// is homogeneous (no clipping, no snapping) and evaluated in float64 exactly like the reference
// backend. Each triangle is walked by a whole warp (the lanes compute row spans, then share out the
// spans' pixels); triangles with tall or large bounding boxes are queued and their 32-row bands
// spread over many warps. A per-pixel resolve pass then recomputes
// (u, v, z/w, id) and the barycentric derivatives of the winning triangle. No host
// synchronization: every buffer is sized up front.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace nvdr {

struct RasterizeFwdParams {
  const float* pos = nullptr;        // [N, V, 4] (instanced) or [V, 4] (range mode); 16-byte aligned
  const int* tri = nullptr;          // [T, 3]
  int64_t num_vertices = 0;          // V
  int64_t num_triangles = 0;         // T
  int num_images = 0;                // N
  int height = 0, width = 0;
  bool instanced = true;
  // Range mode only (device memory): [N + 1] exclusive prefix of per-image triangle counts
  // (clamped to [0, T)), followed by [N] first triangle of each image.
  const int64_t* range_info = nullptr;
  int64_t total_work = 0;            // N * T (instanced) or the sum of clamped counts (range mode)
  const float* prev_rast = nullptr;  // [N, H, W, 4] of the previous depth-peeling layer, or null
  float* rast = nullptr;             // out [N, H, W, 4]
  float* rast_db = nullptr;          // out [N, H, W, 4]
  void* scratch = nullptr;           // rasterize_scratch_bytes() bytes, 256-byte aligned
  int64_t queue_capacity = 0;        // from rasterize_queue_capacity()
  int num_sms = 1;
};

// Number of large-triangle queue entries to reserve. Triangles that do not fit are rasterized by
// their setup warp instead (slower, same result), so no retry or host synchronization is needed.
int64_t rasterize_queue_capacity(int64_t total_work, int num_images, int height, int width);
size_t rasterize_scratch_bytes(int num_images, int height, int width, int64_t queue_capacity);

cudaError_t rasterize_fwd(const RasterizeFwdParams& p, cudaStream_t stream);

struct RasterizeBwdParams {
  const float* pos = nullptr;   // as in the forward pass
  const int* tri = nullptr;
  int64_t num_vertices = 0;
  int64_t num_triangles = 0;
  int num_images = 0;
  int height = 0, width = 0;
  bool instanced = true;
  const float* rast = nullptr;  // [N, H, W, 4] forward output
  const float* dy = nullptr;    // [N, H, W, 4] gradient w.r.t. rast (channels 0, 1 used)
  const float* ddb = nullptr;   // [N, H, W, 4] gradient w.r.t. rast_db, or null
  // Atomic mode: grad_pos (shaped like pos, zero-initialized) receives the sums.
  float* grad_pos = nullptr;
  // Deterministic mode (grad_pos null): per-pixel contributions, [N*H*W, 3 vertices, 3 (x, y, w)]
  // and the flat gradient row of each vertex [N*H*W, 3] (-1 where the pixel contributes nothing).
  float* contrib = nullptr;
  int64_t* contrib_rows = nullptr;
};

cudaError_t rasterize_bwd(const RasterizeBwdParams& p, cudaStream_t stream);

}  // namespace nvdr
