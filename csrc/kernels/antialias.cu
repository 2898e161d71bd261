// Analytic antialiasing kernels (spec §4.5) and the topology hash (spec §3.9).
//
// A work item is a pair of horizontally or vertically adjacent pixels (P0, P1 = right / upper neighbour)
// with different triangle ids. Instead of appending items to a list and scattering with atomics, every
// pixel evaluates the (at most four) items it belongs to and gathers their effect on itself: the forward
// and the colour gradient are therefore deterministic and atomic-free. Each item is evaluated by both of
// its pixels with identical inputs, so both see the same result. Position gradients (a scatter onto the
// edge's two vertices) are emitted by P0 only, with atomics or, in deterministic mode, through a sort.
#include <math.h>

#include "antialias.h"

namespace {

constexpr int kBlock = 256;

__device__ __forceinline__ uint64_t edge_key(int a, int b) {
  uint32_t lo = (uint32_t)min(a, b), hi = (uint32_t)max(a, b);
  return ((uint64_t)lo << 32) | hi;
}

__device__ __forceinline__ uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

__global__ void hash_clear_kernel(AntialiasHash h) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < h.capacity; i += (int64_t)gridDim.x * blockDim.x) {
    h.keys[i] = NVDR_SKIP_KEY;
    h.vals[i] = make_int2(-1, -1);
  }
}

__global__ void hash_build_kernel(const int* tri, int64_t T, AntialiasHash h) {
  const uint64_t mask = (uint64_t)h.capacity - 1;
  for (int64_t t = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; t < T; t += (int64_t)gridDim.x * blockDim.x) {
    const int v[3] = {tri[3 * t], tri[3 * t + 1], tri[3 * t + 2]};
    if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[0] == v[1] || v[1] == v[2] || v[0] == v[2]) continue;
    for (int e = 0; e < 3; ++e) {
      const uint64_t key = edge_key(v[e], v[(e + 1) % 3]);
      uint64_t slot = mix64(key) & mask;
      for (int64_t probe = 0; probe < h.capacity; ++probe) {
        unsigned long long old = atomicCAS(reinterpret_cast<unsigned long long*>(h.keys + slot),
                                           (unsigned long long)NVDR_SKIP_KEY, (unsigned long long)key);
        if (old == (unsigned long long)NVDR_SKIP_KEY) {
          h.vals[slot] = make_int2((int)t, v[(e + 2) % 3]);
          break;
        }
        slot = (slot + 1) & mask;
      }
    }
  }
}

// Item geometry is evaluated in double precision: the accept / reject thresholds then agree with the
// float64 CPU reference except in truly degenerate cases.
struct Proj {
  bool ok;
  double x, y;   // pixel coordinates
};

__device__ __forceinline__ const float* vertex_ptr(const AntialiasParams& p, int64_t n, int v) {
  return p.pos + ((p.pos_batched ? n * p.V : 0) + v) * 4;
}

__device__ __forceinline__ float4 load_vertex(const AntialiasParams& p, int64_t n, int v) {
  return reinterpret_cast<const float4*>(vertex_ptr(p, n, v))[0];
}

__device__ __forceinline__ Proj project(const AntialiasParams& p, const float4& q) {
  Proj r;
  const double iw = 1.0 / (double)q.w;
  r.x = (double)q.x * iw * (0.5 * (double)p.W) + 0.5 * (double)p.W;
  r.y = (double)q.y * iw * (0.5 * (double)p.H) + 0.5 * (double)p.H;
  r.ok = q.w > 0.f && isfinite(r.x) && isfinite(r.y);
  return r;
}

// Side of q relative to the line through a and b, from the homogeneous (x, y, w) determinant; the sign
// of q.w makes it consistent for vertices behind the camera.
__device__ __forceinline__ int side_of(const float4& a, const float4& b, const float4& q) {
  const double det = (double)a.x * ((double)b.y * q.w - (double)b.w * q.y) -
                     (double)a.y * ((double)b.x * q.w - (double)b.w * q.x) +
                     (double)a.w * ((double)b.x * q.y - (double)b.y * q.x);
  const int sd = det > 0.0 ? 1 : (det < 0.0 ? -1 : 0);
  const int sw = q.w > 0.f ? 1 : (q.w < 0.f ? -1 : 0);
  return sd * sw;
}

// Is edge (vi, vj) of triangle t (third vertex vk) a silhouette in image n? The neighbour across the
// edge is the other triangle with the lowest index sharing the vertex pair; the edge is a silhouette
// when there is none, when its opposite vertex is out of range, or when that vertex lies on the same
// side as vk (a fold).
__device__ bool is_silhouette(const AntialiasParams& p, int64_t n, int64_t t, int vi, int vj, int vk) {
  const uint64_t key = edge_key(vi, vj);
  const uint64_t mask = (uint64_t)p.hash.capacity - 1;
  uint64_t slot = mix64(key) & mask;
  int best_t = -1, best_v = -1;
  for (int64_t probe = 0; probe < p.hash.capacity; ++probe) {
    const uint64_t k = p.hash.keys[slot];
    if (k == NVDR_SKIP_KEY) break;
    if (k == key) {
      const int2 val = p.hash.vals[slot];
      if ((int64_t)val.x != t && (best_t < 0 || val.x < best_t)) {
        best_t = val.x;
        best_v = val.y;
      }
    }
    slot = (slot + 1) & mask;
  }
  if (best_t < 0 || best_v < 0 || (int64_t)best_v >= p.V) return true;
  const float4 a = load_vertex(p, n, vi), b = load_vertex(p, n, vj);
  return side_of(a, b, load_vertex(p, n, vk)) * side_of(a, b, load_vertex(p, n, best_v)) > 0;
}

struct Item {
  bool ok;
  float alpha;     // signed blend weight
  int target;      // 0: P0 receives, 1: P1 receives
  bool has_grad;   // 0 < δ < 1
  int v[2];        // edge vertices
  double dpx[2], dpy[2];  // dδ/d(pixel x, pixel y) for both edge vertices
  int owner;       // 0 or 1
};

__device__ __forceinline__ int64_t decode_valid(const AntialiasParams& p, float v) {
  int64_t t = nvdr_decode_tri(v);
  return (t >= 0 && t < p.T) ? t : -1;
}

// Evaluates the item between pixel (x0, y0) and its neighbour (x1, y1) of image n.
__device__ Item eval_item(const AntialiasParams& p, int64_t n, int x0, int y0, int x1, int y1, bool vertical) {
  Item it;
  it.ok = false;
  const float4* rast = reinterpret_cast<const float4*>(p.rast);
  const int64_t img = n * p.H * p.W;
  const float4 r0 = rast[img + (int64_t)y0 * p.W + x0];
  const float4 r1 = rast[img + (int64_t)y1 * p.W + x1];
  const int64_t t0 = decode_valid(p, r0.w), t1 = decode_valid(p, r1.w);
  if (t0 == t1) return it;
  int owner;
  if (t0 >= 0 && t1 >= 0) owner = r0.z < r1.z ? 0 : 1;
  else owner = t0 >= 0 ? 0 : 1;
  const int64_t t = owner ? t1 : t0;
  int vi[3];
  Proj pr[3];
  for (int k = 0; k < 3; ++k) {
    vi[k] = p.tri[3 * t + k];
    if (vi[k] < 0 || (int64_t)vi[k] >= p.V) return it;
    pr[k] = project(p, load_vertex(p, n, vi[k]));
    if (!pr[k].ok) return it;  // the owning triangle must lie in front of the camera
  }
  // Frame: origin at the owner pixel's centre, "along" axis pointing to the other pixel.
  const double ox = (owner ? x1 : x0) + 0.5, oy = (owner ? y1 : y0) + 0.5;
  const double dirs = owner ? -1.0 : 1.0;
  double a[3], b[3];
  for (int k = 0; k < 3; ++k) {
    const double dx = pr[k].x - ox, dy = pr[k].y - oy;
    a[k] = dirs * (vertical ? dy : dx);
    b[k] = vertical ? dx : dy;
  }
  int best = -1;
  double best_d = 0.0;
  for (int e = 0; e < 3; ++e) {
    const int i = e, j = (e + 1) % 3;
    if ((b[i] >= 0.0) == (b[j] >= 0.0)) continue;
    const double d = a[i] + (a[j] - a[i]) * b[i] / (b[i] - b[j]);
    if (best < 0 || d > best_d) {
      best = e;
      best_d = d;
    }
  }
  if (best < 0) return it;
  const int i = best, j = (best + 1) % 3, k = (best + 2) % 3;
  if (!(fabs(b[j] - b[i]) >= fabs(a[j] - a[i]))) return it;
  if (!(best_d >= -1.0 / 16.0 && best_d <= 1.0 + 1.0 / 16.0)) return it;
  if (!is_silhouette(p, n, t, vi[i], vi[j], vi[k])) return it;
  const double dc = fmin(fmax(best_d, 0.0), 1.0);
  double alpha = 0.5 - dc;
  if (owner) alpha = -alpha;
  it.ok = true;
  it.alpha = (float)alpha;
  it.target = it.alpha > 0.f ? 0 : 1;
  it.owner = owner;
  it.v[0] = vi[i];
  it.v[1] = vi[j];
  it.has_grad = best_d > 0.0 && best_d < 1.0;
  if (it.has_grad) {
    double D = b[i] - b[j];
    if (fabs(D) < 1e-3) D = D < 0.0 ? -1e-3 : 1e-3;
    const double tt = b[i] / D;
    const double da_i = 1.0 - tt, da_j = tt;
    const double iD2 = 1.0 / (D * D);
    const double db_i = -(a[j] - a[i]) * b[j] * iD2, db_j = (a[j] - a[i]) * b[i] * iD2;
    // a = dirs·(along coordinate), b = across coordinate.
    if (vertical) {
      it.dpx[0] = db_i; it.dpy[0] = dirs * da_i;
      it.dpx[1] = db_j; it.dpy[1] = dirs * da_j;
    } else {
      it.dpx[0] = dirs * da_i; it.dpy[0] = db_i;
      it.dpx[1] = dirs * da_j; it.dpy[1] = db_j;
    }
  }
  return it;
}

// Pass 1 (forward): every pixel evaluates the items it starts (with its right and its upper neighbour)
// once and stores their signed blend weights; kNoItem marks "no item".
constexpr float kNoItem = 2.f;  // |α| <= 1/2 for real items

__global__ void antialias_eval_kernel(AntialiasParams p, float2* work) {
  const int64_t total = p.N * p.H * p.W;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = pix / (p.H * p.W);
    const int64_t rem = pix - n * p.H * p.W;
    const int y = (int)(rem / p.W), x = (int)(rem - (int64_t)y * p.W);
    float ar = kNoItem, au = kNoItem;
    if (x + 1 < p.W) {
      const Item it = eval_item(p, n, x, y, x + 1, y, false);
      if (it.ok) ar = it.alpha;
    }
    if (y + 1 < p.H) {
      const Item it = eval_item(p, n, x, y, x, y + 1, true);
      if (it.ok) au = it.alpha;
    }
    work[pix] = make_float2(ar, au);
  }
}

// Pass 2 (forward): out[P] = color[P] + the items that target P, gathered in the fixed order right, up,
// left, down (deterministic, no atomics). An item (P0, P1) targets P0 when α > 0, else P1.
__global__ void antialias_gather_kernel(AntialiasParams p, const float2* work) {
  const int64_t total = p.N * p.H * p.W;
  const int64_t C = p.C;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    const int64_t rem = pix % (p.H * p.W);
    const int y = (int)(rem / p.W), x = (int)(rem - (int64_t)y * p.W);
    const float* c0 = p.color + pix * C;
    float* o = p.out + pix * C;
    for (int64_t c = 0; c < C; ++c) o[c] = c0[c];
    const float2 w = work[pix];
    if (w.x != kNoItem && w.x > 0.f) {
      const float* c1 = p.color + (pix + 1) * C;
      for (int64_t c = 0; c < C; ++c) o[c] += w.x * (c1[c] - c0[c]);
    }
    if (w.y != kNoItem && w.y > 0.f) {
      const float* c1 = p.color + (pix + p.W) * C;
      for (int64_t c = 0; c < C; ++c) o[c] += w.y * (c1[c] - c0[c]);
    }
    if (x > 0) {
      const float a = work[pix - 1].x;
      if (a != kNoItem && !(a > 0.f)) {
        const float* ca = p.color + (pix - 1) * C;
        for (int64_t c = 0; c < C; ++c) o[c] += a * (c0[c] - ca[c]);
      }
    }
    if (y > 0) {
      const float a = work[pix - p.W].y;
      if (a != kNoItem && !(a > 0.f)) {
        const float* ca = p.color + (pix - p.W) * C;
        for (int64_t c = 0; c < C; ++c) o[c] += a * (c0[c] - ca[c]);
      }
    }
  }
}

// Backward: colour gradient gathered from the stored weights (same order as the forward); position
// gradients only for accepted items whose weight is not saturated, re-evaluated for their geometry
// and emitted once per item by its P0.
template <bool DET>
__global__ void antialias_bwd_kernel(AntialiasParams p, const float2* work, uint64_t* det_keys, float* det_vals) {
  const int64_t total = p.N * p.H * p.W;
  const int64_t C = p.C;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = pix / (p.H * p.W);
    const int64_t rem = pix - n * p.H * p.W;
    const int y = (int)(rem / p.W), x = (int)(rem - (int64_t)y * p.W);
    float* gc = p.grad_color + pix * C;
    const float* g0 = p.dy + pix * C;
    for (int64_t c = 0; c < C; ++c) gc[c] = g0[c];
    if (DET)
      for (int s = 0; s < 4; ++s) det_keys[pix * 4 + s] = NVDR_SKIP_KEY;
    const float2 w = work[pix];
    // out[target] += α (c[P1] − c[P0]): P1 gains α·dy[target], P0 loses it.
    if (w.x != kNoItem) {
      const float* gt = p.dy + (w.x > 0.f ? pix : pix + 1) * C;
      for (int64_t c = 0; c < C; ++c) gc[c] -= w.x * gt[c];
    }
    if (w.y != kNoItem) {
      const float* gt = p.dy + (w.y > 0.f ? pix : pix + p.W) * C;
      for (int64_t c = 0; c < C; ++c) gc[c] -= w.y * gt[c];
    }
    if (x > 0) {
      const float a = work[pix - 1].x;
      if (a != kNoItem) {
        const float* gt = p.dy + (a > 0.f ? pix - 1 : pix) * C;
        for (int64_t c = 0; c < C; ++c) gc[c] += a * gt[c];
      }
    }
    if (y > 0) {
      const float a = work[pix - p.W].y;
      if (a != kNoItem) {
        const float* gt = p.dy + (a > 0.f ? pix - p.W : pix) * C;
        for (int64_t c = 0; c < C; ++c) gc[c] += a * gt[c];
      }
    }
    for (int q = 0; q < 2; ++q) {
      const float alpha = q == 0 ? w.x : w.y;
      if (alpha == kNoItem || !(fabsf(alpha) <= 0.5f)) continue;
      const bool vertical = q == 1;
      const int xb = vertical ? x : x + 1, yb = vertical ? y + 1 : y;
      const Item it = eval_item(p, n, x, y, xb, yb, vertical);
      if (!it.ok || !it.has_grad) continue;
      const int64_t pa = pix, pb = vertical ? pix + p.W : pix + 1;
      const float* gt = p.dy + (it.target ? pb : pa) * C;
      const float* ca = p.color + pa * C;
      const float* cb = p.color + pb * C;
      float Dsum = 0.f;
      for (int64_t c = 0; c < C; ++c) Dsum += gt[c] * (cb[c] - ca[c]);
      const double dadd = it.owner ? 1.0 : -1.0;  // dα/dδ
      const double scale = (double)Dsum * dadd * (double)p.pos_gradient_boost;
      for (int e = 0; e < 2; ++e) {
        const float4 v4 = load_vertex(p, n, it.v[e]);
        const double iw = 1.0 / (double)v4.w;
        const double hx = 0.5 * (double)p.W, hy = 0.5 * (double)p.H;
        const double gxd = scale * it.dpx[e] * hx * iw;
        const double gyd = scale * it.dpy[e] * hy * iw;
        const double gwd = -(gxd * (double)v4.x + gyd * (double)v4.y) * iw;
        const float gx = (float)gxd, gy = (float)gyd, gw = (float)gwd;
        if (!isfinite(gx) || !isfinite(gy) || !isfinite(gw)) continue;
        const int64_t row = (p.pos_batched ? n * p.V : 0) + it.v[e];
        if (DET) {
          const int s = q * 2 + e;
          det_keys[pix * 4 + s] = (uint64_t)row;
          det_vals[(pix * 4 + s) * 3 + 0] = gx;
          det_vals[(pix * 4 + s) * 3 + 1] = gy;
          det_vals[(pix * 4 + s) * 3 + 2] = gw;
        } else {
          float* gp = p.grad_pos + row * 4;
          atomicAdd(gp + 0, gx);
          atomicAdd(gp + 1, gy);
          atomicAdd(gp + 3, gw);
        }
      }
    }
  }
}

__global__ void antialias_det_reduce_kernel(AntialiasParams p, NvdrSortedSegments s, const float* vals) {
  const int count = *s.seg_count;
  for (int64_t si = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; si < count; si += (int64_t)gridDim.x * blockDim.x) {
    const int64_t start = s.seg_start[si];
    const int64_t end = nvdr_segment_end(s, start);
    float gx = 0.f, gy = 0.f, gw = 0.f;
    for (int64_t e = start; e < end; ++e) {
      const int64_t entry = s.order[e];
      gx += vals[entry * 3 + 0];
      gy += vals[entry * 3 + 1];
      gw += vals[entry * 3 + 2];
    }
    float* gp = p.grad_pos + (int64_t)s.keys[start] * 4;
    gp[0] = gx;
    gp[1] = gy;
    gp[3] = gw;
  }
}

}  // namespace

int64_t antialias_hash_capacity(int64_t T) {
  int64_t need = 6 * (T > 0 ? T : 1);
  int64_t cap = 64;
  while (cap < need) cap <<= 1;
  return cap;
}

cudaError_t antialias_build_hash_cuda(const int* tri, int64_t T, AntialiasHash h, cudaStream_t stream) {
  if (h.capacity <= 0 || (h.capacity & (h.capacity - 1)) != 0) return cudaErrorInvalidValue;
  hash_clear_kernel<<<nvdr_grid_1d(h.capacity, kBlock), kBlock, 0, stream>>>(h);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  if (T > 0) {
    hash_build_kernel<<<nvdr_grid_1d(T, kBlock), kBlock, 0, stream>>>(tri, T, h);
    NVDR_RETURN_IF_LAUNCH_ERROR();
  }
  return cudaSuccess;
}

cudaError_t antialias_fwd_cuda(const AntialiasParams& p, float* work, cudaStream_t stream) {
  const int64_t total = p.N * p.H * p.W;
  if (total <= 0) return cudaSuccess;
  float2* w = reinterpret_cast<float2*>(work);
  antialias_eval_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, w);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  antialias_gather_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, w);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}

cudaError_t antialias_bwd_cuda(const AntialiasParams& p, const float* work, int deterministic,
                               const NvdrAllocator& alloc, cudaStream_t stream) {
  const int64_t rows = (p.pos_batched ? p.N : 1) * p.V;
  NVDR_RETURN_IF_ERROR(cudaMemsetAsync(p.grad_pos, 0, (size_t)(rows * 4) * sizeof(float), stream));
  const int64_t total = p.N * p.H * p.W;
  if (total <= 0) return cudaSuccess;
  const float2* w = reinterpret_cast<const float2*>(work);
  if (!w) {  // no saved forward work: evaluate the items again
    float2* fresh = alloc.get<float2>(total);
    if (!fresh) return cudaErrorMemoryAllocation;
    antialias_eval_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, fresh);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    w = fresh;
  }
  if (!deterministic) {
    antialias_bwd_kernel<false><<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, w, nullptr, nullptr);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    return cudaSuccess;
  }
  const int64_t n = total * 4;
  uint64_t* keys = alloc.get<uint64_t>(n);
  float* vals = alloc.get<float>(n * 3);
  if (!keys || !vals) return cudaErrorMemoryAllocation;
  antialias_bwd_kernel<true><<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, w, keys, vals);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  NvdrSortedSegments s;
  NVDR_RETURN_IF_ERROR(nvdr_sort_segments(keys, n, (uint64_t)(rows > 0 ? rows - 1 : 0), alloc, stream, &s));
  antialias_det_reduce_kernel<<<nvdr_grid_1d(n, kBlock), kBlock, 0, stream>>>(p, s, vals);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}
