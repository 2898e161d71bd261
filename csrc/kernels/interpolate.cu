// Attribute interpolation kernels (spec §4.2).
//
// Forward: one thread per pixel. Backward: one thread per pixel for the rast / rast_db gradients; the
// attribute gradient is the expensive part (a scatter onto few vertices from many pixels). Neighbouring
// pixels mostly share a triangle, so each warp groups its pixels by triangle (__match_any_sync) and
// reduces each group with the lanes spread over (corner, channel) pairs: one atomic per group, corner
// and channel instead of one per pixel. The deterministic variant sorts pixels by triangle and sums
// every triangle's pixels, then every vertex's triangle corners, in a fixed order.
#include "interpolate.h"

namespace {

constexpr int kBlock = 256;

struct PixelTri {
  bool ok;
  int64_t n;      // image index
  int64_t t;      // triangle index
  int vi[3];      // vertex indices
  float u, v;
  float4 db;      // (du/dX, du/dY, dv/dX, dv/dY)
};

__device__ __forceinline__ PixelTri load_pixel(const InterpolateParams& p, int64_t pix, bool need_db) {
  PixelTri r;
  float4 rs = reinterpret_cast<const float4*>(p.rast)[pix];
  r.n = nvdr_image_of(pix, p.H * p.W, p.N * p.H * p.W);
  r.u = rs.x;
  r.v = rs.y;
  r.t = nvdr_decode_tri(rs.w);
  r.ok = r.t >= 0 && r.t < p.T;
  r.vi[0] = r.vi[1] = r.vi[2] = 0;
  if (r.ok) {
    const int* tp = p.tri + r.t * 3;
    r.vi[0] = __ldg(tp);
    r.vi[1] = __ldg(tp + 1);
    r.vi[2] = __ldg(tp + 2);
    for (int c = 0; c < 3; ++c) r.ok = r.ok && r.vi[c] >= 0 && (int64_t)r.vi[c] < p.V;
  }
  r.db = make_float4(0.f, 0.f, 0.f, 0.f);
  if (need_db && r.ok) r.db = reinterpret_cast<const float4*>(p.rast_db)[pix];
  return r;
}

// dy / dda of pixel `pix`; channel c is at [c * dy_cs(p)] / [c * dda_cs(p)].
__device__ __forceinline__ const float* dy_at(const InterpolateParams& p, int64_t pix) {
  return p.dy_contig ? p.dy + pix * p.A : p.dy + nvdr_pixel_offset(pix, p.H, p.W, p.dy_s[0], p.dy_s[1], p.dy_s[2]);
}
__device__ __forceinline__ int64_t dy_cs(const InterpolateParams& p) { return p.dy_contig ? 1 : p.dy_s[3]; }
__device__ __forceinline__ const float* dda_at(const InterpolateParams& p, int64_t pix) {
  return p.dda_contig ? p.dda + pix * 2 * p.K
                      : p.dda + nvdr_pixel_offset(pix, p.H, p.W, p.dda_s[0], p.dda_s[1], p.dda_s[2]);
}
__device__ __forceinline__ int64_t dda_cs(const InterpolateParams& p) { return p.dda_contig ? 1 : p.dda_s[3]; }

__device__ __forceinline__ int diff_channel(const InterpolateParams& p, int64_t j) {
  return p.diff_identity ? (j < p.A ? (int)j : -1) : __ldg(p.diff_idx + j);
}

template <int VEC>
__global__ void interpolate_fwd_kernel(InterpolateParams p) {
  const int64_t total = p.N * p.H * p.W;
  const int64_t A = p.A, K = p.K;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    PixelTri px = load_pixel(p, pix, K > 0);
    float* o = p.out + pix * A;
    float* od = K > 0 ? p.out_da + pix * 2 * K : nullptr;
    if (!px.ok) {
      if (VEC == 4) {
        for (int64_t k = 0; k < A; k += 4) *reinterpret_cast<float4*>(o + k) = make_float4(0.f, 0.f, 0.f, 0.f);
      } else {
        for (int64_t k = 0; k < A; ++k) o[k] = 0.f;
      }
      for (int64_t j = 0; j < 2 * K; ++j) od[j] = 0.f;
      continue;
    }
    const float* ab = p.attr + (p.attr_batched ? px.n * p.V * A : 0);
    const float* a0 = ab + (int64_t)px.vi[0] * A;
    const float* a1 = ab + (int64_t)px.vi[1] * A;
    const float* a2 = ab + (int64_t)px.vi[2] * A;
    const float u = px.u, v = px.v, w = 1.f - px.u - px.v;
    if (VEC == 4) {
      for (int64_t k = 0; k < A; k += 4) {
        float4 x0 = __ldg(reinterpret_cast<const float4*>(a0 + k));
        float4 x1 = __ldg(reinterpret_cast<const float4*>(a1 + k));
        float4 x2 = __ldg(reinterpret_cast<const float4*>(a2 + k));
        float4 r;
        r.x = u * x0.x + v * x1.x + w * x2.x;
        r.y = u * x0.y + v * x1.y + w * x2.y;
        r.z = u * x0.z + v * x1.z + w * x2.z;
        r.w = u * x0.w + v * x1.w + w * x2.w;
        *reinterpret_cast<float4*>(o + k) = r;
      }
    } else {
      for (int64_t k = 0; k < A; ++k) o[k] = u * __ldg(a0 + k) + v * __ldg(a1 + k) + w * __ldg(a2 + k);
    }
    if (K > 0) {
      const float4 db = px.db;
      if (p.diff_identity && VEC == 4 && (K & 1) == 0) {
        for (int64_t j = 0; j < K; j += 2) {
          float d0a = __ldg(a0 + j) - __ldg(a2 + j), d1a = __ldg(a1 + j) - __ldg(a2 + j);
          float d0b = __ldg(a0 + j + 1) - __ldg(a2 + j + 1), d1b = __ldg(a1 + j + 1) - __ldg(a2 + j + 1);
          float4 r = make_float4(d0a * db.x + d1a * db.z, d0a * db.y + d1a * db.w, d0b * db.x + d1b * db.z,
                                 d0b * db.y + d1b * db.w);
          *reinterpret_cast<float4*>(od + 2 * j) = r;
        }
      } else {
        for (int64_t j = 0; j < K; ++j) {
          int k = diff_channel(p, j);
          float gx = 0.f, gy = 0.f;
          if (k >= 0) {
            float d0 = __ldg(a0 + k) - __ldg(a2 + k), d1 = __ldg(a1 + k) - __ldg(a2 + k);
            gx = d0 * db.x + d1 * db.z;
            gy = d0 * db.y + d1 * db.w;
          }
          od[2 * j] = gx;
          od[2 * j + 1] = gy;
        }
      }
    }
  }
}

// Per-pixel part of the backward: gradients w.r.t. rast (u, v) and rast_db. Returns the pixel data.
__device__ __forceinline__ PixelTri pixel_backward(const InterpolateParams& p, int64_t pix) {
  const int64_t A = p.A, K = p.K;
  PixelTri px = load_pixel(p, pix, K > 0);
  float gu = 0.f, gv = 0.f;
  float4 gdb = make_float4(0.f, 0.f, 0.f, 0.f);
  if (px.ok) {
    const float* ab = p.attr + (p.attr_batched ? px.n * p.V * A : 0);
    const float* a0 = ab + (int64_t)px.vi[0] * A;
    const float* a1 = ab + (int64_t)px.vi[1] * A;
    const float* a2 = ab + (int64_t)px.vi[2] * A;
    const float* g = dy_at(p, pix);
    const int64_t gs = dy_cs(p);
    for (int64_t k = 0; k < A; ++k) {
      float gk = g[k * gs], x2 = __ldg(a2 + k);
      gu += gk * (__ldg(a0 + k) - x2);
      gv += gk * (__ldg(a1 + k) - x2);
    }
    if (K > 0) {
      const float* gd = dda_at(p, pix);
      const int64_t ds = dda_cs(p);
      for (int64_t j = 0; j < K; ++j) {
        int k = diff_channel(p, j);
        if (k < 0) continue;
        float gx = gd[2 * j * ds], gy = gd[(2 * j + 1) * ds];
        float x2 = __ldg(a2 + k);
        float d0 = __ldg(a0 + k) - x2, d1 = __ldg(a1 + k) - x2;
        gdb.x += gx * d0;
        gdb.y += gy * d0;
        gdb.z += gx * d1;
        gdb.w += gy * d1;
      }
    }
  }
  reinterpret_cast<float4*>(p.grad_rast)[pix] = make_float4(gu, gv, 0.f, 0.f);
  if (p.grad_rast_db) reinterpret_cast<float4*>(p.grad_rast_db)[pix] = gdb;
  return px;
}

// Contribution of one pixel to the gradient of corner c, channel k of its triangle.
__device__ __forceinline__ float corner_term(const InterpolateParams& p, int64_t pix, int c, int k, float u, float v,
                                             float4 db) {
  const float coef = c == 0 ? u : (c == 1 ? v : 1.f - u - v);
  float s = coef * dy_at(p, pix)[k * dy_cs(p)];
  if (p.K > 0) {
    const float cx = c == 0 ? db.x : (c == 1 ? db.z : -(db.x + db.z));
    const float cy = c == 0 ? db.y : (c == 1 ? db.w : -(db.y + db.w));
    const float* gd = dda_at(p, pix);
    const int64_t ds = dda_cs(p);
    if (p.diff_identity) {
      if (k < p.K) s += gd[2 * k * ds] * cx + gd[(2 * k + 1) * ds] * cy;
    } else {
      for (int q = __ldg(p.diff_off + k), e = __ldg(p.diff_off + k + 1); q < e; ++q) {
        int j = __ldg(p.diff_js + q);
        s += gd[2 * j * ds] * cx + gd[(2 * j + 1) * ds] * cy;
      }
    }
  }
  return s;
}

__global__ void interpolate_bwd_kernel(InterpolateParams p) {
  const int64_t total = p.N * p.H * p.W;
  const int lane = threadIdx.x & 31;
  const int64_t warp0 = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) - lane;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int A = (int)p.A;
  for (int64_t base = warp0; base < total; base += stride) {
    const int64_t pix = base + lane;
    unsigned long long key = NVDR_SKIP_KEY;
    PixelTri px;
    px.ok = false;
    px.u = px.v = 0.f;
    px.db = make_float4(0.f, 0.f, 0.f, 0.f);
    px.n = 0;
    if (pix < total) {
      px = pixel_backward(p, pix);
      if (px.ok) key = (unsigned long long)((p.attr_batched ? px.n : 0) * p.T + px.t);
    }
    const unsigned full = 0xffffffffu;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    const unsigned peers = __match_any_sync(full, key);
#else
    const unsigned peers = 1u << lane;  // no match instruction: every pixel is its own group
#endif
    const bool leader = key != NVDR_SKIP_KEY && (__ffs(peers) - 1) == lane;
    unsigned leaders = __ballot_sync(full, leader);
    while (leaders) {
      const int l = __ffs(leaders) - 1;
      leaders &= leaders - 1;
      const unsigned gp = __shfl_sync(full, peers, l);
      const int64_t nb = __shfl_sync(full, p.attr_batched ? px.n : (int64_t)0, l);
      int vtx[3];
      for (int c = 0; c < 3; ++c) vtx[c] = __shfl_sync(full, px.vi[c], l);
      for (int q0 = 0; q0 < 3 * A; q0 += 32) {
        const int q = q0 + lane;
        const bool active = q < 3 * A;
        const int c = active ? q / A : 0;
        const int k = active ? q - c * A : 0;
        float sum = 0.f;
        unsigned m = gp;
        while (m) {
          const int pl = __ffs(m) - 1;
          m &= m - 1;
          const float u = __shfl_sync(full, px.u, pl);
          const float v = __shfl_sync(full, px.v, pl);
          float4 db;
          db.x = __shfl_sync(full, px.db.x, pl);
          db.y = __shfl_sync(full, px.db.y, pl);
          db.z = __shfl_sync(full, px.db.z, pl);
          db.w = __shfl_sync(full, px.db.w, pl);
          if (active) sum += corner_term(p, base + pl, c, k, u, v, db);
        }
        if (active) atomicAdd(p.grad_attr + (nb * p.V + vtx[c]) * p.A + k, sum);
      }
    }
  }
}

// ---- deterministic path ----------------------------------------------------------------------------

__global__ void interpolate_bwd_keys_kernel(InterpolateParams p, uint64_t* keys) {
  const int64_t total = p.N * p.H * p.W;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    PixelTri px = pixel_backward(p, pix);
    keys[pix] = px.ok ? (uint64_t)((p.attr_batched ? px.n : 0) * p.T + px.t) : NVDR_SKIP_KEY;
  }
}

// One warp per (image, triangle) segment: sums its pixels in sorted (= pixel) order into corner_buf.
__global__ void interpolate_bwd_tri_reduce_kernel(InterpolateParams p, NvdrSortedSegments s, float* corner_buf) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const int count = *s.seg_count;
  const int A = (int)p.A;
  for (int64_t si = warp; si < count; si += nwarps) {
    const int64_t start = s.seg_start[si];
    const int64_t end = nvdr_segment_end(s, start);
    const uint64_t key = s.keys[start];
    for (int q = lane; q < 3 * A; q += 32) {
      const int c = q / A, k = q - c * A;
      float sum = 0.f;
      for (int64_t e = start; e < end; ++e) {
        const int64_t pix = s.order[e];
        float4 rs = reinterpret_cast<const float4*>(p.rast)[pix];
        float4 db = p.K > 0 ? reinterpret_cast<const float4*>(p.rast_db)[pix] : make_float4(0.f, 0.f, 0.f, 0.f);
        sum += corner_term(p, pix, c, k, rs.x, rs.y, db);
      }
      corner_buf[(key * 3 + c) * A + k] = sum;
    }
  }
}

__global__ void interpolate_bwd_corner_keys_kernel(InterpolateParams p, uint64_t* keys) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < p.T * 3; e += (int64_t)gridDim.x * blockDim.x) {
    int vi = p.tri[e];
    keys[e] = (vi >= 0 && (int64_t)vi < p.V) ? (uint64_t)vi : NVDR_SKIP_KEY;
  }
}

// One warp per vertex: sums the corners of every attr batch in sorted (= corner) order.
__global__ void interpolate_bwd_vertex_reduce_kernel(InterpolateParams p, NvdrSortedSegments s,
                                                     const float* corner_buf, int64_t nb_count) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const int count = *s.seg_count;
  const int64_t A = p.A;
  for (int64_t si = warp; si < count; si += nwarps) {
    const int64_t start = s.seg_start[si];
    const int64_t end = nvdr_segment_end(s, start);
    const int64_t vtx = (int64_t)s.keys[start];
    for (int64_t q = lane; q < nb_count * A; q += 32) {
      const int64_t nb = q / A, k = q - nb * A;
      float sum = 0.f;
      for (int64_t e = start; e < end; ++e) {
        const int64_t corner = s.order[e];  // t * 3 + c
        sum += corner_buf[((nb * p.T * 3) + corner) * A + k];
      }
      p.grad_attr[(nb * p.V + vtx) * A + k] = sum;
    }
  }
}

}  // namespace

cudaError_t interpolate_fwd_cuda(const InterpolateParams& p, cudaStream_t stream) {
  const int64_t total = p.N * p.H * p.W;
  if (total <= 0) return cudaSuccess;
  const bool vec = (p.A % 4) == 0 && (reinterpret_cast<uintptr_t>(p.out) & 15) == 0 &&
                   (reinterpret_cast<uintptr_t>(p.attr) & 15) == 0 &&
                   (p.K == 0 || (reinterpret_cast<uintptr_t>(p.out_da) & 15) == 0);
  const int grid = nvdr_grid_1d(total, kBlock);
  if (vec)
    interpolate_fwd_kernel<4><<<grid, kBlock, 0, stream>>>(p);
  else
    interpolate_fwd_kernel<1><<<grid, kBlock, 0, stream>>>(p);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}

cudaError_t interpolate_bwd_cuda(const InterpolateParams& p, int deterministic, const NvdrAllocator& alloc,
                                 cudaStream_t stream) {
  const int64_t total = p.N * p.H * p.W;
  const int64_t nb_count = p.attr_batched ? p.N : 1;
  NVDR_RETURN_IF_ERROR(cudaMemsetAsync(p.grad_attr, 0, (size_t)(nb_count * p.V * p.A) * sizeof(float), stream));
  if (total <= 0) return cudaSuccess;
  if (!deterministic) {
    interpolate_bwd_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    return cudaSuccess;
  }
  // Stage 1: pixels → (image, triangle) corners, summed in pixel order.
  uint64_t* keys = alloc.get<uint64_t>(total);
  const int64_t ntri = nb_count * p.T;
  float* corner_buf = alloc.get<float>(ntri * 3 * p.A);
  if (!keys || !corner_buf) return cudaErrorMemoryAllocation;
  NVDR_RETURN_IF_ERROR(cudaMemsetAsync(corner_buf, 0, (size_t)(ntri * 3 * p.A) * sizeof(float), stream));
  interpolate_bwd_keys_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, keys);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  NvdrSortedSegments s1;
  NVDR_RETURN_IF_ERROR(nvdr_sort_segments(keys, total, (uint64_t)(ntri > 0 ? ntri - 1 : 0), alloc, stream, &s1));
  interpolate_bwd_tri_reduce_kernel<<<nvdr_grid_1d(total * 32, kBlock, 4096), kBlock, 0, stream>>>(p, s1,
                                                                                                   corner_buf);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  // Stage 2: triangle corners → vertices, summed in corner order.
  uint64_t* ckeys = alloc.get<uint64_t>(p.T * 3);
  if (!ckeys) return cudaErrorMemoryAllocation;
  interpolate_bwd_corner_keys_kernel<<<nvdr_grid_1d(p.T * 3, kBlock), kBlock, 0, stream>>>(p, ckeys);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  NvdrSortedSegments s2;
  NVDR_RETURN_IF_ERROR(nvdr_sort_segments(ckeys, p.T * 3, (uint64_t)(p.V > 0 ? p.V - 1 : 0), alloc, stream, &s2));
  interpolate_bwd_vertex_reduce_kernel<<<nvdr_grid_1d(p.T * 3 * 32, kBlock, 4096), kBlock, 0, stream>>>(
      p, s2, corner_buf, nb_count);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}
