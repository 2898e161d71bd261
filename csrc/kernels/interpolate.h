// Attribute interpolation (spec §3.5, §4.2): forward and backward, torch-free.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "texture_common.cuh"

struct InterpolateParams {
  // Inputs.
  const float* attr;      // [attr_batch?, V, A]
  const float* rast;      // [N, H, W, 4]
  const int* tri;         // [T, 3]
  const float* rast_db;   // [N, H, W, 4] or nullptr
  int64_t N, H, W;        // image batch and size
  int64_t V, A, T;
  int attr_batched;       // 1: attr has a batch dimension of size N; 0: shared by all images
  // Derivative channels: K entries; diff_idx[j] in [0, A) or -1 (zero output). diff_identity = 1 means
  // diff_idx[j] == j for all j (then diff_idx may be nullptr). K == 0: no derivatives.
  int64_t K;
  const int* diff_idx;    // device [K]
  int diff_identity;
  // Backward only: for channel k, the derivative slots j with diff_idx[j] == k are
  // diff_js[diff_off[k] .. diff_off[k+1]) (device arrays; unused when diff_identity).
  const int* diff_off;    // [A + 1]
  const int* diff_js;     // [K]

  // Forward outputs.
  float* out;             // [N, H, W, A]
  float* out_da;          // [N, H, W, 2K] (K > 0)

  // Backward inputs / outputs.
  const float* dy;        // [N, H, W, A]
  const float* dda;       // [N, H, W, 2K] or nullptr
  // Element strides (n, h, w, channel) of dy and dda; *_contig = 1: dense, strides unused.
  int64_t dy_s[4], dda_s[4];
  int dy_contig, dda_contig;
  float* grad_attr;       // like attr (zeroed by the caller is not required: the kernels initialize it)
  float* grad_rast;       // [N, H, W, 4]
  float* grad_rast_db;    // [N, H, W, 4] or nullptr
};

cudaError_t interpolate_fwd_cuda(const InterpolateParams& p, cudaStream_t stream);

// deterministic = 1: the attr gradient is reduced in a fixed order (sort-based; uses `alloc`).
cudaError_t interpolate_bwd_cuda(const InterpolateParams& p, int deterministic, const NvdrAllocator& alloc,
                                 cudaStream_t stream);
