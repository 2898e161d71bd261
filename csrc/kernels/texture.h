// Texture sampling (spec §3.6, §4.3, §4.4): forward and backward, torch-free.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "texture_common.cuh"

constexpr int NVDR_MAX_MIP_LEVELS = 16;

enum NvdrFilterMode { NVDR_FILTER_NEAREST = 0, NVDR_FILTER_LINEAR = 1, NVDR_FILTER_LINEAR_MIP_NEAREST = 2,
                      NVDR_FILTER_LINEAR_MIP_LINEAR = 3 };
enum NvdrBoundaryMode { NVDR_BOUNDARY_WRAP = 0, NVDR_BOUNDARY_CLAMP = 1, NVDR_BOUNDARY_ZERO = 2,
                        NVDR_BOUNDARY_CUBE = 3 };

struct TextureParams {
  // Levels: level 0 is the texture; each is [tex_batch, H_l, W_l, C] or cube [tex_batch, 6, S_l, S_l, C].
  const float* levels[NVDR_MAX_MIP_LEVELS];
  int level_w[NVDR_MAX_MIP_LEVELS];
  int level_h[NVDR_MAX_MIP_LEVELS];
  int64_t level_offset[NVDR_MAX_MIP_LEVELS];  // texel offset of each level in the flat gradient buffer
  int num_levels;
  int64_t tex_batch;  // 1 (broadcast) or N
  int64_t C;
  int filter;         // NvdrFilterMode
  int boundary;       // NvdrBoundaryMode (cube iff NVDR_BOUNDARY_CUBE)

  const float* uv;        // [N, h, w, 2|3]
  const float* uv_da;     // [N, h, w, 4|6] or nullptr
  const float* bias;      // [N, h, w] or nullptr
  int64_t N, h, w;

  float* out;             // forward: [N, h, w, C]

  // Backward.
  const float* dy;        // [N, h, w, C], any non-negative strides (an expanded gradient needs no copy)
  int64_t dy_sn, dy_sh, dy_sw, dy_sc;  // element strides of dy
  int dy_contig;          // 1: dy is contiguous (strides ignored)
  float* grad_flat;       // all levels' gradients, level l at grad_flat + level_offset[l] * grad_stride;
                          // nullptr: no texel gradients wanted
  int64_t grad_stride;    // floats per texel in grad_flat (>= C; 4 for C == 3 allows one vector atomic)
  int64_t grad_texels;    // texels in grad_flat
  float* grad_uv;         // [N, h, w, 2|3] or nullptr (nearest)
  float* grad_uv_da;      // or nullptr
  float* grad_bias;       // or nullptr
};

cudaError_t texture_fwd_cuda(const TextureParams& p, cudaStream_t stream);
cudaError_t texture_bwd_cuda(const TextureParams& p, int deterministic, const NvdrAllocator& alloc,
                             cudaStream_t stream);
