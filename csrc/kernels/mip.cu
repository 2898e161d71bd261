// Mip pyramid kernels (see mip.h).
#include "mip.h"

namespace {

constexpr int kBlock = 256;

__global__ void mip_level_kernel(const float* __restrict__ src, float* __restrict__ dst, int64_t batch, int hs, int ws,
                                 int hd, int wd, int64_t C) {
  const int64_t total = batch * hd * wd * C;
  const int fh = hs > 1 ? 2 : 1, fw = ws > 1 ? 2 : 1;
  const float scale = 1.f / (float)(fh * fw);
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = e % C;
    const int64_t t = e / C;
    const int64_t j = t % wd;
    const int64_t i = (t / wd) % hd;
    const int64_t b = t / ((int64_t)wd * hd);
    const float* s = src + ((b * hs + i * fh) * ws + j * fw) * C + c;
    float acc = s[0];
    if (fw == 2) acc += s[C];
    if (fh == 2) {
      const float* s2 = s + (int64_t)ws * C;
      acc += s2[0];
      if (fw == 2) acc += s2[C];
    }
    dst[e] = acc * scale;
  }
}

// One thread per base texel (all channels); level coordinates by shifts (sizes halve level to level).
__global__ void mip_adjoint_kernel(const __grid_constant__ MipParams p) {
  const int64_t H0 = p.h[0], W0 = p.w[0], C = p.C;
  const int64_t rows = p.batch * H0;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t b = r / H0;
    const int i = (int)(r - b * H0);
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < W0; j += gridDim.x * blockDim.x) {
      const int64_t e0 = (r * W0 + j) * C;
      for (int64_t c = 0; c < C; ++c) {
        float acc = p.in[0] ? p.in[0][e0 + c] : 0.f;
        for (int l = 1; l < p.num_levels; ++l) {
          if (!p.in[l]) continue;
          const int64_t il = i >> p.sh_h[l], jl = j >> p.sh_w[l];
          acc += p.in[l][((b * p.h[l] + il) * p.w[l] + jl) * C + c] * p.scale[l];
        }
        p.out[0][e0 + c] = acc;
      }
    }
  }
}

}  // namespace

cudaError_t mip_build_cuda(const MipParams& p, cudaStream_t stream) {
  if (p.num_levels < 1 || p.num_levels > NVDR_MAX_MIP_LEVELS) return cudaErrorInvalidValue;
  for (int l = 1; l < p.num_levels; ++l) {
    const float* src = l == 1 ? p.in[0] : p.out[l - 1];
    const int64_t total = p.batch * p.h[l] * p.w[l] * p.C;
    if (total <= 0) continue;
    mip_level_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(src, p.out[l], p.batch, p.h[l - 1],
                                                                         p.w[l - 1], p.h[l], p.w[l], p.C);
    NVDR_RETURN_IF_LAUNCH_ERROR();
  }
  return cudaSuccess;
}

cudaError_t mip_adjoint_cuda(const MipParams& p_in, cudaStream_t stream) {
  if (p_in.num_levels < 1 || p_in.num_levels > NVDR_MAX_MIP_LEVELS) return cudaErrorInvalidValue;
  MipParams p = p_in;
  for (int l = 0; l < p.num_levels; ++l) {
    if (p.h[l] < 1 || p.w[l] < 1 || p.h[0] % p.h[l] || p.w[0] % p.w[l]) return cudaErrorInvalidValue;
    const int rh = p.h[0] / p.h[l], rw = p.w[0] / p.w[l];
    if ((rh & (rh - 1)) || (rw & (rw - 1))) return cudaErrorInvalidValue;  // a halving chain
    p.sh_h[l] = 0;
    p.sh_w[l] = 0;
    while ((1 << p.sh_h[l]) < rh) ++p.sh_h[l];
    while ((1 << p.sh_w[l]) < rw) ++p.sh_w[l];
    p.scale[l] = 1.f / (float)((int64_t)rh * rw);
  }
  const int64_t rows = p.batch * p.h[0];
  if (rows <= 0 || p.C <= 0) return cudaSuccess;
  const int bx = 128;
  dim3 grid((unsigned)((p.w[0] + bx - 1) / bx), (unsigned)(rows < 65535 ? rows : 65535));
  mip_adjoint_kernel<<<grid, bx, 0, stream>>>(p);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}
