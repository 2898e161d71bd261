// Box-filter mip pyramids on the GPU (spec §3.6): building the levels and the exact adjoint that folds
// level gradients back into the base texture. Torch-free.
#pragma once
#include <cuda_runtime.h>
#include <stdint.h>

#include "texture.h"

struct MipParams {
  // Level l is [batch, H_l, W_l, C] (cube maps: batch = images x 6 faces). Level 0 is the base texture.
  const float* in[NVDR_MAX_MIP_LEVELS];
  float* out[NVDR_MAX_MIP_LEVELS];
  int h[NVDR_MAX_MIP_LEVELS];
  int w[NVDR_MAX_MIP_LEVELS];
  int num_levels;  // including level 0
  // Filled by mip_adjoint_cuda: log2(H_0 / H_l), log2(W_0 / W_l) and (H_l W_l) / (H_0 W_0).
  int sh_h[NVDR_MAX_MIP_LEVELS];
  int sh_w[NVDR_MAX_MIP_LEVELS];
  float scale[NVDR_MAX_MIP_LEVELS];
  int64_t batch;
  int64_t C;
  int64_t in_stride;  // mip_adjoint_cuda: floats per texel of in[l] (>= C; 0 means C)
  int vec4;           // set by mip_adjoint_cuda: in[l >= 1] hold aligned 16-byte texels
};

// Builds levels 1..num_levels-1: out[l] = 2x2 (or 2x1 where a side is already 1) mean of level l-1,
// reading level l-1 from in[0] (l = 1) or out[l-1].
cudaError_t mip_build_cuda(const MipParams& p, cudaStream_t stream);

// out[0] = in[0] + sum over l >= 1 of in[l] spread over the base texels it averaged, scaled by the
// area ratio (H_l W_l)/(H_0 W_0): the adjoint of the whole pyramid in one pass. in[l] may be nullptr.
// in[l] texels are in_stride floats apart (padded gradient buffers), out[0] is dense [.., C].
cudaError_t mip_adjoint_cuda(const MipParams& p, cudaStream_t stream);
