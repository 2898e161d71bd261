// Mip pyramid kernels (see mip.h).
#include "mip.h"
#include "cuda_compat.cuh"

namespace {

// One thread per destination texel (all channels); rows of the destination level run along grid y, so
// only one division per thread is needed.
__global__ void mip_level_kernel(const float* __restrict__ src, float* __restrict__ dst, int64_t batch, int hs, int ws,
                                 int hd, int wd, int64_t C) {
  const int fh = hs > 1 ? 2 : 1, fw = ws > 1 ? 2 : 1;
  const float scale = 1.f / (float)(fh * fw);
  const int64_t rows = batch * hd;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t b = r / hd;
    const int i = (int)(r - b * hd);
    const float* srow = src + ((b * hs + (int64_t)i * fh) * ws) * C;
    float* drow = dst + r * wd * C;
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < wd; j += gridDim.x * blockDim.x) {
      const float* s0 = srow + (int64_t)j * fw * C;
      const float* s1 = s0 + (fh == 2 ? (int64_t)ws * C : 0);
      for (int64_t c = 0; c < C; ++c) {
        float acc = s0[c];
        if (fw == 2) acc += s0[C + c];
        if (fh == 2) {
          acc += s1[c];
          if (fw == 2) acc += s1[C + c];
        }
        drow[(int64_t)j * C + c] = acc * scale;
      }
    }
  }
}

// Box mean of the (fh x fw) block of `src` (a [.., ws, C] row-major level) whose top-left texel is at
// row `row0` (batch included), column `sj`, channel c: the summation order of mip_level_kernel, so that
// fused and per-level builds agree bitwise.
__device__ __forceinline__ float mip_box(const float* __restrict__ src, int64_t row0, int ws, int sj, int fh, int fw,
                                         int64_t C, int64_t c) {
  const float* s0 = src + (row0 * ws + (int64_t)sj) * C;
  const float* s1 = s0 + (fh == 2 ? (int64_t)ws * C : 0);
  float acc = s0[c];
  if (fw == 2) acc += s0[C + c];
  if (fh == 2) {
    acc += s1[c];
    if (fw == 2) acc += s1[C + c];
  }
  return acc * (1.f / (float)(fh * fw));
}

// Two levels per launch: one thread per texel of the second level (all channels) computes the (up to
// 2x2) texels of the first level it averages, stores them, and averages them in turn.
__global__ void mip_two_levels_kernel(const float* __restrict__ src, float* __restrict__ mid, float* __restrict__ dst,
                                      int64_t batch, int hs, int ws, int hm, int wm, int hd, int wd, int64_t C) {
  const int f1h = hs > 1 ? 2 : 1, f1w = ws > 1 ? 2 : 1;
  const int f2h = hm > 1 ? 2 : 1, f2w = wm > 1 ? 2 : 1;
  const int64_t rows = batch * hd;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t b = r / hd;
    const int i = (int)(r - b * hd);
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < wd; j += gridDim.x * blockDim.x) {
      for (int64_t c = 0; c < C; ++c) {
        float m[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int a = k >> 1, e = k & 1;
          if (a >= f2h || e >= f2w) continue;
          const int im = i * f2h + a, jm = j * f2w + e;
          m[k] = mip_box(src, b * hs + (int64_t)im * f1h, ws, jm * f1w, f1h, f1w, C, c);
          mid[((b * hm + im) * wm + jm) * C + c] = m[k];
        }
        // Same order as mip_box: (0,0), (0,1), (1,0), (1,1).
        float acc = m[0];
        if (f2w == 2) acc += m[1];
        if (f2h == 2) {
          acc += m[2];
          if (f2w == 2) acc += m[3];
        }
        dst[(r * wd + j) * C + c] = acc * (1.f / (float)(f2h * f2w));
      }
    }
  }
}

// The small tail of the pyramid: one block per image builds levels first..num_levels-1 one after the
// other (the block's own global writes are visible to it after __syncthreads).
__global__ void mip_tail_kernel(const NVDR_GRID_CONSTANT MipParams p, int first) {
  const int64_t C = p.C;
  for (int64_t b = blockIdx.x; b < p.batch; b += gridDim.x) {
    for (int l = first; l < p.num_levels; ++l) {
      const float* src = l == 1 ? p.in[0] : p.out[l - 1];
      const int hs = p.h[l - 1], ws = p.w[l - 1], hd = p.h[l], wd = p.w[l];
      const int fh = hs > 1 ? 2 : 1, fw = ws > 1 ? 2 : 1;
      float* dst = p.out[l];
      const int n = hd * wd;
      for (int t = threadIdx.x; t < n; t += blockDim.x) {
        const int i = t / wd, j = t - i * wd;
        for (int64_t c = 0; c < C; ++c)
          dst[((b * hd + i) * wd + j) * C + c] = mip_box(src, b * hs + (int64_t)i * fh, ws, j * fw, fh, fw, C, c);
      }
      __syncthreads();
    }
  }
}

// One thread per base texel (all channels); level coordinates by shifts (sizes halve level to level).
// I: the texel index type, 32-bit whenever the base level's texels allow (the kernel is bound by its
// integer instructions).
template <class I>
__global__ void mip_adjoint_kernel(const NVDR_GRID_CONSTANT MipParams p) {
  const I H0 = p.h[0], W0 = p.w[0];
  const int64_t C = p.C, S = p.in_stride;
  const I rows = (I)p.batch * H0;
  for (I r = blockIdx.y; r < rows; r += gridDim.y) {
    const I b = r / H0;
    const int i = (int)(r - b * H0);
    for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < W0; j += gridDim.x * blockDim.x) {
      const I t0 = r * W0 + j;
      if (C <= 4) {
        // All channels at once, levels in the outer loop (one index computation and, for padded
        // gradients, one vector load per level).
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        if (p.in[0]) {
#pragma unroll
          for (int c = 0; c < 4; ++c)
            if (c < C) acc[c] = p.in[0][t0 * S + c];
        }
#pragma unroll
        for (int l = 1; l < NVDR_MAX_MIP_LEVELS; ++l) {
          if (l >= p.num_levels) break;
          const float* src = p.in[l];
          if (!src) continue;
          const I idx = (b * (I)p.h[l] + (I)(i >> p.sh_h[l])) * (I)p.w[l] + (I)(j >> p.sh_w[l]);
          const float sc = p.scale[l];
          if (p.vec4) {
            const float4 v = __ldg(reinterpret_cast<const float4*>(src) + idx);
            acc[0] += v.x * sc;
            acc[1] += v.y * sc;
            acc[2] += v.z * sc;
            acc[3] += v.w * sc;
          } else {
#pragma unroll
            for (int c = 0; c < 4; ++c)
              if (c < C) acc[c] += __ldg(src + idx * S + c) * sc;
          }
        }
#pragma unroll
        for (int c = 0; c < 4; ++c)
          if (c < C) p.out[0][t0 * C + c] = acc[c];
        continue;
      }
      for (int64_t c = 0; c < C; ++c) {
        float acc = p.in[0] ? p.in[0][t0 * S + c] : 0.f;
        for (int l = 1; l < p.num_levels; ++l) {
          if (!p.in[l]) continue;
          const int64_t il = i >> p.sh_h[l], jl = j >> p.sh_w[l];
          acc += p.in[l][((b * p.h[l] + il) * p.w[l] + jl) * S + c] * p.scale[l];
        }
        p.out[0][t0 * C + c] = acc;
      }
    }
  }
}

}  // namespace

// Levels whose source has at most this many texels per image are built by the single-block tail kernel.
constexpr int kMipTailTexels = 4096;

cudaError_t mip_build_cuda(const MipParams& p, cudaStream_t stream) {
  if (p.num_levels < 1 || p.num_levels > NVDR_MAX_MIP_LEVELS) return cudaErrorInvalidValue;
  if (p.batch <= 0 || p.C <= 0) return cudaSuccess;
  for (int l = 1; l < p.num_levels; ++l)
    if (p.h[l] <= 0 || p.w[l] <= 0) return cudaErrorInvalidValue;
  // Few launches: two levels per launch while the levels are large, then the rest in one tail launch.
  int l = 1;
  while (l < p.num_levels && (int64_t)p.h[l - 1] * p.w[l - 1] > kMipTailTexels) {
    const float* src = l == 1 ? p.in[0] : p.out[l - 1];
    const bool two = l + 1 < p.num_levels;
    const int ld = two ? l + 1 : l;  // level computed by one thread each
    const int64_t rows = p.batch * p.h[ld];
    const int bx = p.w[ld] >= 128 ? 128 : 32;
    dim3 grid((unsigned)((p.w[ld] + bx - 1) / bx), (unsigned)(rows < 65535 ? rows : 65535));
    if (two)
      mip_two_levels_kernel<<<grid, bx, 0, stream>>>(src, p.out[l], p.out[l + 1], p.batch, p.h[l - 1], p.w[l - 1],
                                                     p.h[l], p.w[l], p.h[l + 1], p.w[l + 1], p.C);
    else
      mip_level_kernel<<<grid, bx, 0, stream>>>(src, p.out[l], p.batch, p.h[l - 1], p.w[l - 1], p.h[l], p.w[l], p.C);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    l += two ? 2 : 1;
  }
  if (l < p.num_levels) {
    const int64_t blocks = p.batch < 65535 ? p.batch : 65535;
    mip_tail_kernel<<<(unsigned)blocks, 256, 0, stream>>>(p, l);
    NVDR_RETURN_IF_LAUNCH_ERROR();
  }
  return cudaSuccess;
}

cudaError_t mip_adjoint_cuda(const MipParams& p_in, cudaStream_t stream) {
  if (p_in.num_levels < 1 || p_in.num_levels > NVDR_MAX_MIP_LEVELS) return cudaErrorInvalidValue;
  MipParams p = p_in;
  if (p.in_stride <= 0) p.in_stride = p.C;
  if (p.in_stride < p.C) return cudaErrorInvalidValue;
  p.vec4 = p.in_stride == 4 ? 1 : 0;  // 16-byte texels: one vector load per level if aligned
  for (int l = 1; l < p.num_levels; ++l)
    if (p.in[l] && (reinterpret_cast<uintptr_t>(p.in[l]) & 15)) p.vec4 = 0;
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
  const bool idx32 = rows * p.w[0] < (int64_t(1) << 31);
  dim3 grid((unsigned)((p.w[0] + bx - 1) / bx), (unsigned)(rows < 65535 ? rows : 65535));
  if (idx32)
    mip_adjoint_kernel<uint32_t><<<grid, bx, 0, stream>>>(p);
  else
    mip_adjoint_kernel<int64_t><<<grid, bx, 0, stream>>>(p);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}
