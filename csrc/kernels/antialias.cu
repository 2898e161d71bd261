// Analytic antialiasing kernels (spec §4.5) and the topology hash (spec §3.9).
//
// A work item is a pair of horizontally or vertically adjacent pixels (P0, P1 = right / upper neighbour)
// with different triangle ids. The forward lists the pairs, evaluates each once (dense warps: the
// double-precision geometry of a few lanes does not stall whole warps) and records the accepted ones in a
// byte of flags per pixel plus a sparse blend weight. Every pixel then gathers the items that touch it, in
// a fixed order: the forward and the colour gradient are deterministic and atomic-free, and they read one
// byte per pixel besides the images. Position gradients (a scatter onto the edge's two vertices) use
// atomics or, in deterministic mode, a sort.
#include <math.h>

#include <cooperative_groups.h>

#include <mutex>
#include <type_traits>

#include "antialias.h"

namespace {

constexpr int kBlock = 256;
// Grid of the gated topology kernels: grid-stride loops, so that a launch whose gate says "nothing to
// do" retires at once.
constexpr int kGateGrid = 1024;

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

// Gated topology kernels run when gate is nullptr or *gate == epoch (tri_compare_kernel found a change in
// this refresh; a refresh passes a new epoch each time, so no reset is needed between calls).
__device__ __forceinline__ bool gated_off(const int* gate, int epoch) {
  return gate && *(volatile const int*)gate != epoch;
}

// The topology phases as grid-stride loops (start, stride), run either as separate kernels or as the
// phases of one cooperative kernel.
__device__ __forceinline__ void hash_clear_range(AntialiasHash h, int64_t start, int64_t stride) {
  for (int64_t i = start; i < h.capacity; i += stride)
    reinterpret_cast<ulonglong2*>(h.slots)[i] = make_ulonglong2(NVDR_SKIP_KEY, ~0ull);  // key, (-1, -1)
}

// One thread per triangle edge (independent inserts keep more atomics in flight than a loop over three).
__device__ __forceinline__ void hash_build_range(const int* tri, int64_t T, AntialiasHash h, int64_t start,
                                                 int64_t stride) {
  const uint64_t mask = (uint64_t)h.capacity - 1;
  for (int64_t te = start; te < 3 * T; te += stride) {
    const int64_t t = te / 3;
    const int e = (int)(te - t * 3);
    const int v[3] = {tri[3 * t], tri[3 * t + 1], tri[3 * t + 2]};
    if (v[0] < 0 || v[1] < 0 || v[2] < 0 || v[0] == v[1] || v[1] == v[2] || v[0] == v[2]) continue;
    const uint64_t key = edge_key(v[e], v[(e + 1) % 3]);
    uint64_t slot = mix64(key) & mask;
    for (int64_t probe = 0; probe < h.capacity; ++probe) {
      unsigned long long old = atomicCAS(reinterpret_cast<unsigned long long*>(h.slots + 2 * slot),
                                         (unsigned long long)NVDR_SKIP_KEY, (unsigned long long)key);
      if (old == (unsigned long long)NVDR_SKIP_KEY) {
        reinterpret_cast<int2*>(h.slots + 2 * slot + 1)[0] = make_int2((int)t, v[(e + 2) % 3]);
        break;
      }
      slot = (slot + 1) & mask;
    }
  }
}

// One thread per triangle edge: the probe that a pixel would do, done once per topology. A refresh also
// updates its copy of the triangles here (tri_copy, else nullptr).
__device__ __forceinline__ void hash_neighbors_range(const int* tri, int64_t T, AntialiasHash h, int* nbr,
                                                     int* tri_copy, int64_t start, int64_t stride) {
  const uint64_t mask = (uint64_t)h.capacity - 1;
  for (int64_t te = start; te < 3 * T; te += stride) {
    const int64_t t = te / 3;
    const int e = (int)(te - t * 3);
    const uint64_t key = edge_key(tri[3 * t + e], tri[3 * t + (e + 1) % 3]);
    uint64_t slot = mix64(key) & mask;
    int best_t = -1, best_v = -1;
    for (int64_t probe = 0; probe < h.capacity; ++probe) {
      const ulonglong2 kv = reinterpret_cast<const ulonglong2*>(h.slots)[slot];
      const uint64_t k = kv.x;
      if (k == NVDR_SKIP_KEY) break;
      if (k == key) {
        const int2 val = make_int2((int)(uint32_t)kv.y, (int)(uint32_t)(kv.y >> 32));
        if ((int64_t)val.x != t && (best_t < 0 || val.x < best_t)) {
          best_t = val.x;
          best_v = val.y;
        }
      }
      slot = (slot + 1) & mask;
    }
    nbr[te] = best_t < 0 ? -1 : best_v;
    if (tri_copy) tri_copy[te] = tri[te];
  }
}

// Sets *gate = epoch (block-wide vote) when tri and the copy the topology was built from differ.
__device__ __forceinline__ void tri_compare_range(const int* tri, const int* tri_copy, int64_t n, int* gate, int epoch,
                                                  int64_t start, int64_t stride) {
  bool differ = false;
  for (int64_t i = start; i < n; i += stride) differ |= tri[i] != tri_copy[i];
  if (__syncthreads_or(differ) && threadIdx.x == 0) *gate = epoch;
}

#define NVDR_GRID_RANGE blockIdx.x * (int64_t)blockDim.x + threadIdx.x, (int64_t)gridDim.x * blockDim.x

// init_gate: where an ungated build zeroes the gate word (no epoch is ever 0).
__global__ void hash_clear_kernel(AntialiasHash h, const int* gate, int epoch, int* init_gate) {
  if (gated_off(gate, epoch)) return;
  if (init_gate && blockIdx.x == 0 && threadIdx.x == 0) *init_gate = 0;
  hash_clear_range(h, NVDR_GRID_RANGE);
}

__global__ void hash_build_kernel(const int* tri, int64_t T, AntialiasHash h, const int* gate, int epoch) {
  if (gated_off(gate, epoch)) return;
  hash_build_range(tri, T, h, NVDR_GRID_RANGE);
}

__global__ void hash_neighbors_kernel(const int* tri, int64_t T, AntialiasHash h, int* nbr, const int* gate, int epoch,
                                      int* tri_copy) {
  if (gated_off(gate, epoch)) return;
  hash_neighbors_range(tri, T, h, nbr, tri_copy, NVDR_GRID_RANGE);
}

__global__ void tri_compare_kernel(const int* tri, const int* tri_copy, int64_t n, int* gate, int epoch) {
  tri_compare_range(tri, tri_copy, n, gate, epoch, NVDR_GRID_RANGE);
}

// The whole refresh in one cooperative launch (one launch instead of four: the refresh runs on every
// antialias call that reuses a topology, where host time is what small images wait for). The gate is
// read after a grid-wide barrier, so every thread takes the same branch.
__global__ void topology_refresh_kernel(const int* tri, int* tri_copy, int64_t T, AntialiasHash h, int* nbr, int* gate,
                                        int epoch) {
  cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  tri_compare_range(tri, tri_copy, 3 * T, gate, epoch, NVDR_GRID_RANGE);
  grid.sync();
  if (*(volatile int*)gate != epoch) return;  // unchanged: the topology is current
  hash_clear_range(h, NVDR_GRID_RANGE);
  grid.sync();
  hash_build_range(tri, T, h, NVDR_GRID_RANGE);
  grid.sync();
  hash_neighbors_range(tri, T, h, nbr, tri_copy, NVDR_GRID_RANGE);
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
// The neighbour comes from the table built with the hash (edge e of t runs from vi to vj).
__device__ bool is_silhouette(const AntialiasParams& p, int64_t n, int64_t t, int e, int vi, int vj, int vk) {
  const int best_v = __ldg(p.nbr + 3 * t + e);
  if (best_v < 0 || (int64_t)best_v >= p.V) return true;
  const float4 a = load_vertex(p, n, vi), b = load_vertex(p, n, vj);
  return side_of(a, b, load_vertex(p, n, vk)) * side_of(a, b, load_vertex(p, n, best_v)) > 0;
}

// Silhouette bits of triangle t in image n (bit e: edge e), computed once per call for all triangles, and
// the triangle's projected vertices: an item then rejects a non-silhouette owner triangle before anything
// else, and projects nothing. A triangle with an invalid or non-projectable vertex gets no bits (its items
// are rejected either way).
// count (optional): the forward's item counter, zeroed here to spare a memset call.
__global__ void antialias_silhouette_kernel(AntialiasParams p, int64_t images, uint8_t* sil, double2* proj,
                                            uint32_t* count) {
  if (count && blockIdx.x == 0 && threadIdx.x == 0) *count = 0u;
  const int64_t total = images * p.T;
  for (int64_t idx = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; idx < total;
       idx += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = idx / p.T, t = idx - n * p.T;
    int v[3];
    bool valid = true;
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      v[k] = p.tri[3 * t + k];
      valid &= v[k] >= 0 && (int64_t)v[k] < p.V;
    }
    unsigned m = 0;
    if (valid) {
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const Proj pr = project(p, load_vertex(p, n, v[k]));
        valid &= pr.ok;
        proj[idx * 3 + k] = make_double2(pr.x, pr.y);
      }
    }
    if (valid) {
#pragma unroll
      for (int e = 0; e < 3; ++e)
        if (is_silhouette(p, n, t, e, v[e], v[(e + 1) % 3], v[(e + 2) % 3])) m |= 1u << e;
    }
    sil[idx] = (uint8_t)m;
  }
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

// Image, column and row of pixel `pix`; 32-bit divisions whenever the pixel count allows (they are
// several times cheaper than 64-bit ones, and the memory-bound passes do little else).
__device__ __forceinline__ void pixel_coords(const AntialiasParams& p, int64_t pix, int64_t& n, int& x, int& y) {
  const int64_t HW = p.H * p.W;
  if (p.N * HW <= 0xffffffffll) {
    const uint32_t u = (uint32_t)pix, hw = (uint32_t)HW, w = (uint32_t)p.W;
    const uint32_t nn = u / hw, rem = u - nn * hw, yy = rem / w;
    n = nn;
    y = (int)yy;
    x = (int)(rem - yy * w);
  } else {
    n = pix / HW;
    const int64_t rem = pix - n * HW;
    y = (int)(rem / p.W);
    x = (int)(rem - (int64_t)y * p.W);
  }
}

__device__ __forceinline__ int64_t decode_valid(const AntialiasParams& p, float v) {
  int64_t t = nvdr_decode_tri(v);
  return (t >= 0 && t < p.T) ? t : -1;
}

template <class T>
__device__ __forceinline__ T sel3(const T (&v)[3], int i) {
  return i == 0 ? v[0] : (i == 1 ? v[1] : v[2]);
}

// Evaluates the item between pixel (x0, y0) and its neighbour (x1, y1) of image n.

// check_silhouette = false skips the topology test: the backward re-evaluates only items the forward
// accepted (for their geometry), so it never depends on a topology that may have been rebuilt since.
// need_geometry = false (the forward): the edge's vertices and derivatives are left out, has_grad is set.
__device__ Item eval_item(const AntialiasParams& p, int64_t n, int x0, int y0, int x1, int y1, bool vertical,
                          bool check_silhouette, bool need_geometry = true) {
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
  unsigned sil = 7u;
  int vi[3] = {0, 0, 0};
  Proj pr[3];
  const bool tabled = check_silhouette && p.sil;
  if (tabled) {
    const int64_t nt = (p.pos_batched ? n : 0) * p.T + t;
    sil = p.sil[nt];
    if (!sil) return it;  // no edge of the owner is a silhouette (or the owner cannot be projected)
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      const double2 q = p.proj[nt * 3 + k];
      pr[k].x = q.x;
      pr[k].y = q.y;
    }
  }
  if (!tabled || need_geometry) {
#pragma unroll
    for (int k = 0; k < 3; ++k) vi[k] = p.tri[3 * t + k];
  }
  if (!tabled) {
#pragma unroll
    for (int k = 0; k < 3; ++k) {
      if (vi[k] < 0 || (int64_t)vi[k] >= p.V) return it;
      pr[k] = project(p, load_vertex(p, n, vi[k]));
      if (!pr[k].ok) return it;  // the owning triangle must lie in front of the camera
    }
  }
  // Frame: origin at the owner pixel's centre, "along" axis pointing to the other pixel.
  const double ox = (owner ? x1 : x0) + 0.5, oy = (owner ? y1 : y0) + 0.5;
  const double dirs = owner ? -1.0 : 1.0;
  double a[3], b[3];
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const double dx = pr[k].x - ox, dy = pr[k].y - oy;
    a[k] = dirs * (vertical ? dy : dx);
    b[k] = vertical ? dx : dy;
  }
  int best = -1;
  double best_d = 0.0;
#pragma unroll
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
  // Scalars of the chosen edge (selects keep the arrays in registers).
  const double ai = sel3(a, i), aj = sel3(a, j), bi = sel3(b, i), bj = sel3(b, j);
  const int vii = sel3(vi, i), vij = sel3(vi, j), vik = sel3(vi, k);
  if (!(fabs(bj - bi) >= fabs(aj - ai))) return it;
  if (!(best_d >= -1.0 / 16.0 && best_d <= 1.0 + 1.0 / 16.0)) return it;
  if (check_silhouette && !(p.sil ? ((sil >> i) & 1u) != 0 : is_silhouette(p, n, t, i, vii, vij, vik))) return it;
  const double dc = fmin(fmax(best_d, 0.0), 1.0);
  double alpha = 0.5 - dc;
  if (owner) alpha = -alpha;
  it.ok = true;
  it.alpha = (float)alpha;
  it.target = it.alpha > 0.f ? 0 : 1;
  it.owner = owner;
  it.v[0] = vii;
  it.v[1] = vij;
  it.has_grad = best_d > 0.0 && best_d < 1.0;
  if (it.has_grad && need_geometry) {
    double D = bi - bj;
    if (fabs(D) < 1e-3) D = D < 0.0 ? -1e-3 : 1e-3;
    const double tt = bi / D;
    const double da_i = 1.0 - tt, da_j = tt;
    const double iD2 = 1.0 / (D * D);
    const double db_i = -(aj - ai) * bj * iD2, db_j = (aj - ai) * bi * iD2;
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

__device__ __forceinline__ unsigned item_flags(const Item& it, int q) {
  return it.ok ? ((1u << q) | (it.has_grad ? (4u << q) : 0u)) : 0u;
}

// Forward, dense: every pixel evaluates the items it starts (images too large for 32-bit item codes, and a
// backward without the forward's state).
__global__ void antialias_eval_kernel(AntialiasParams p, uint8_t* flags, float2* alpha) {
  const int64_t total = p.N * p.H * p.W;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    int64_t n;
    int x, y;
    pixel_coords(p, pix, n, x, y);
    unsigned f = 0;
    float2 a = make_float2(0.f, 0.f);
    if (x + 1 < p.W) {
      const Item it = eval_item(p, n, x, y, x + 1, y, false, true, false);
      f |= item_flags(it, 0);
      if (it.ok) a.x = it.alpha;
    }
    if (y + 1 < p.H) {
      const Item it = eval_item(p, n, x, y, x, y + 1, true, true, false);
      f |= item_flags(it, 1);
      if (it.ok) a.y = it.alpha;
    }
    flags[pix] = (uint8_t)f;
    if (f) alpha[pix] = a;
  }
}

// Forward, compacted: pixel pairs whose triangle ids differ become work items (code 2 pix + direction),
// collected per block in shared memory and then evaluated by the whole block. A block handles
// kClassifyPix pixels per step; their flags are assembled in shared memory and stored once. Items with a
// position gradient are appended to grad_items (count first) with one atomic per warp.
constexpr int kClassifyPer = 16;  // pixels per thread and step
constexpr int kClassifyPix = kClassifyPer * kBlock;

__global__ void __launch_bounds__(kBlock, 4) antialias_items_kernel(AntialiasParams p, uint8_t* flags, float2* alpha,
                                                               uint32_t* grad_items) {
  __shared__ uint32_t list[2 * kClassifyPix];
  __shared__ uint32_t sflags[kClassifyPix / 4];  // one byte per pixel of the step
  __shared__ unsigned warp_sum[kBlock / 32];
  __shared__ unsigned list_len;
  const int64_t total = p.N * p.H * p.W;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned full = 0xffffffffu;
  const float4* rast = reinterpret_cast<const float4*>(p.rast);
  for (int64_t step = (int64_t)blockIdx.x * kClassifyPix; step < total; step += (int64_t)gridDim.x * kClassifyPix) {
    for (int i = threadIdx.x; i < kClassifyPix / 4; i += kBlock) sflags[i] = 0u;
    unsigned mine = 0;  // bit 2k + q: pixel k of this thread has an item candidate in direction q
#pragma unroll
    for (int k = 0; k < kClassifyPer; ++k) {
      const int64_t pix = step + (int64_t)k * kBlock + threadIdx.x;
      if (pix >= total) continue;
      int64_t n;
      int x, y;
      pixel_coords(p, pix, n, x, y);
      const int64_t t0 = decode_valid(p, rast[pix].w);
      if (x + 1 < p.W && decode_valid(p, rast[pix + 1].w) != t0) mine |= 1u << (2 * k);
      if (y + 1 < p.H && decode_valid(p, rast[pix + p.W].w) != t0) mine |= 2u << (2 * k);
    }
    // Block-wide exclusive scan of the per-thread item counts gives each thread its list positions.
    const unsigned cnt = (unsigned)__popc(mine);
    unsigned incl = cnt;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const unsigned o = __shfl_up_sync(full, incl, d);
      if (lane >= d) incl += o;
    }
    if (lane == 31) warp_sum[warp] = incl;
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned run = 0;
      for (int w = 0; w < kBlock / 32; ++w) {
        const unsigned v = warp_sum[w];
        warp_sum[w] = run;
        run += v;
      }
      list_len = run;
    }
    __syncthreads();
    unsigned at = warp_sum[warp] + incl - cnt;
    while (mine) {
      const int bit = __ffs(mine) - 1;
      mine &= mine - 1;
      list[at++] = (uint32_t)(((bit >> 1) * kBlock + threadIdx.x) * 2 + (bit & 1));  // block-local code
    }
    __syncthreads();
    const unsigned len = list_len;
    for (unsigned i0 = threadIdx.x - lane; i0 < len; i0 += kBlock) {  // warp-uniform
      const unsigned i = i0 + lane;
      bool grad = false;
      uint32_t code = 0;
      if (i < len) {
        const uint32_t local = list[i];
        const int64_t pix = step + (local >> 1);
        const int q = (int)(local & 1u);
        code = (uint32_t)(pix * 2 + q);
        int64_t n;
        int x, y;
        pixel_coords(p, pix, n, x, y);
        const bool vertical = q == 1;
        const Item it = eval_item(p, n, x, y, vertical ? x : x + 1, vertical ? y + 1 : y, vertical, true, false);
        if (it.ok) {
          reinterpret_cast<float*>(alpha + pix)[q] = it.alpha;
          const uint32_t li = local >> 1;
          atomicOr(&sflags[li >> 2], item_flags(it, q) << (8 * (li & 3u)));
          grad = it.has_grad;
        }
      }
      const unsigned m = __ballot_sync(full, grad);
      if (!m) continue;
      const int leader = __ffs(m) - 1;
      unsigned g_at = 0;
      if (lane == leader) g_at = atomicAdd(grad_items, (unsigned)__popc(m));
      g_at = __shfl_sync(full, g_at, leader);
      if (grad) grad_items[1 + g_at + __popc(m & ((1u << lane) - 1u))] = code;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kClassifyPer; ++k) {
      const int li = k * kBlock + threadIdx.x;
      const int64_t pix = step + li;
      if (pix < total) flags[pix] = (uint8_t)(sflags[li >> 2] >> (8 * (li & 3)));
    }
    __syncthreads();  // list, sflags, warp_sum and list_len are reused by the next step
  }
}

// Which items touch pixel pix: its own two (flags bits 0, 1) and those its left / lower neighbour start
// towards it.
struct Touch {
  unsigned own;
  bool left, down;
};
__device__ __forceinline__ Touch touching(const AntialiasParams& p, const uint8_t* flags, int64_t pix, int x, int y) {
  Touch t;
  t.own = flags[pix] & (NVDR_AA_RIGHT | NVDR_AA_UP);
  t.left = x > 0 && (flags[pix - 1] & NVDR_AA_RIGHT);
  t.down = y > 0 && (flags[pix - p.W] & NVDR_AA_UP);
  return t;
}

// Item weights of pixel pix in the fixed gather order right, up, left, down (slot j's partner is the
// right, upper, left, lower neighbour; tc says which items exist). An item (P0, P1) with weight α adds
// α (c[P1] − c[P0]) to P0 when α > 0, else to P1. Forward: w[j] = what the item adds to pix per unit of
// (c[partner] − c[pix]), 0 where it targets the partner or does not exist.
__device__ __forceinline__ void forward_weights(const AntialiasParams& p, const float2* alpha, const Touch& tc,
                                                int64_t pix, float (&w)[4]) {
  w[0] = w[1] = w[2] = w[3] = 0.f;
  if (tc.own) {
    const float2 a = alpha[pix];
    if ((tc.own & NVDR_AA_RIGHT) && a.x > 0.f) w[0] = a.x;
    if ((tc.own & NVDR_AA_UP) && a.y > 0.f) w[1] = a.y;
  }
  if (tc.left) {
    const float a = alpha[pix - 1].x;
    if (!(a > 0.f)) w[2] = -a;
  }
  if (tc.down) {
    const float a = alpha[pix - p.W].y;
    if (!(a > 0.f)) w[3] = -a;
  }
}

// Backward: the colour gradient of pix gains w[j] · dy[target of item j]; at_partner[j]: that target is
// the partner (else pix itself). w = 0 where the item does not exist.
__device__ __forceinline__ void backward_weights(const AntialiasParams& p, const float2* alpha, const Touch& tc,
                                                 int64_t pix, float (&w)[4], bool (&at_partner)[4]) {
  w[0] = w[1] = w[2] = w[3] = 0.f;
  at_partner[0] = at_partner[1] = at_partner[2] = at_partner[3] = false;
  if (tc.own) {
    const float2 a = alpha[pix];
    if (tc.own & NVDR_AA_RIGHT) { w[0] = -a.x; at_partner[0] = !(a.x > 0.f); }
    if (tc.own & NVDR_AA_UP) { w[1] = -a.y; at_partner[1] = !(a.y > 0.f); }
  }
  if (tc.left) {
    const float a = alpha[pix - 1].x;
    w[2] = a;
    at_partner[2] = a > 0.f;
  }
  if (tc.down) {
    const float a = alpha[pix - p.W].y;
    w[3] = a;
    at_partner[3] = a > 0.f;
  }
}

// Forward gather of one pixel: out[P] = color[P] + the items that target P, in the fixed order right, up,
// left, down. An item (P0, P1) with weight α targets P0 when α > 0, else P1, and adds α (c[P1] − c[P0])
// there. CC > 0: the channel count as a compile-time constant (values stay in registers); 0: any count.
template <int CC>
__device__ __forceinline__ void gather_pixel(const AntialiasParams& p, const uint8_t* flags, const float2* alpha,
                                             int64_t pix, int x, int y) {
  const int64_t C = CC > 0 ? CC : p.C;
  const Touch tc = touching(p, flags, pix, x, y);
  const float* c0 = p.color + pix * C;
  float* o = p.out + pix * C;
  float w[4];
  forward_weights(p, alpha, tc, pix, w);
  const float* cp[4] = {c0 + C, c0 + p.W * C, c0 - C, c0 - p.W * C};  // partner colours
  const bool any = w[0] != 0.f || w[1] != 0.f || w[2] != 0.f || w[3] != 0.f;
  if constexpr (CC > 0) {
    float v[CC];
#pragma unroll
    for (int c = 0; c < CC; ++c) v[c] = c0[c];
    if (any) {
      float acc[CC];
#pragma unroll
      for (int c = 0; c < CC; ++c) acc[c] = v[c];
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (w[k] != 0.f)
#pragma unroll
          for (int c = 0; c < CC; ++c) acc[c] += w[k] * (cp[k][c] - v[c]);
#pragma unroll
      for (int c = 0; c < CC; ++c) v[c] = acc[c];
    }
#pragma unroll
    for (int c = 0; c < CC; ++c) o[c] = v[c];
  } else {
    for (int64_t c = 0; c < C; ++c) {
      const float b = c0[c];
      float acc = b;
      if (any)
        for (int k = 0; k < 4; ++k)
          if (w[k] != 0.f) acc += w[k] * (cp[k][c] - b);
      o[c] = acc;
    }
  }
}

template <int CC>
__global__ void antialias_gather_kernel(AntialiasParams p, const uint8_t* flags, const float2* alpha) {
  const int64_t total = p.N * p.H * p.W;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    int64_t n;
    int x, y;
    pixel_coords(p, pix, n, x, y);
    gather_pixel<CC>(p, flags, alpha, pix, x, y);
  }
}

// Flag bytes around the quad pix0 .. pix0 + 3 of one row (pix0 % 4 == 0, W % 4 == 0): its own four, the
// four below it, and the left neighbour's.
struct QuadFlags {
  uint32_t own, down;
  unsigned left;
  __device__ __forceinline__ bool touched() const {
    return (own & 0x03030303u) || (down & 0x02020202u) || (left & NVDR_AA_RIGHT);
  }
  // The items touching pixel k of the quad (as touching() for that pixel).
  __device__ __forceinline__ Touch pixel(int k) const {
    Touch t;
    t.own = (own >> (8 * k)) & (NVDR_AA_RIGHT | NVDR_AA_UP);
    t.left = ((k > 0 ? own >> (8 * (k - 1)) : left) & NVDR_AA_RIGHT) != 0;
    t.down = ((down >> (8 * k)) & NVDR_AA_UP) != 0;
    return t;
  }
};
__device__ __forceinline__ QuadFlags quad_flags(const AntialiasParams& p, const uint8_t* flags, int64_t pix0, int x0,
                                                int y) {
  QuadFlags q;
  q.own = reinterpret_cast<const uint32_t*>(flags)[pix0 >> 2];
  q.down = y > 0 ? reinterpret_cast<const uint32_t*>(flags + pix0 - p.W)[0] : 0u;
  q.left = x0 > 0 ? flags[pix0 - 1] : 0u;
  return q;
}

// Gather for images with W % 4 == 0, four pixels per thread: colours move as float4, and the items of the
// quad are applied in registers in gather_pixel's order.
template <int CC>
__global__ void antialias_gather4_kernel(AntialiasParams p, const uint8_t* flags, const float2* alpha) {
  const int64_t quads = p.N * p.H * p.W / 4;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < quads; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t pix0 = i * 4;
    int64_t n;
    int x0, y;
    pixel_coords(p, pix0, n, x0, y);
    const QuadFlags qf = quad_flags(p, flags, pix0, x0, y);
    float v[4 * CC];
    const float4* src = reinterpret_cast<const float4*>(p.color + pix0 * CC);
#pragma unroll
    for (int k = 0; k < CC; ++k) {
      const float4 f = src[k];
      v[4 * k] = f.x;
      v[4 * k + 1] = f.y;
      v[4 * k + 2] = f.z;
      v[4 * k + 3] = f.w;
    }
    float o[4 * CC];
#pragma unroll
    for (int k = 0; k < 4 * CC; ++k) o[k] = v[k];
    if (qf.touched()) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const Touch tc = qf.pixel(k);
        if (!tc.own && !tc.left && !tc.down) continue;
        const int64_t pix = pix0 + k;
        float w[4];
        forward_weights(p, alpha, tc, pix, w);
        // Partner colours by value (k is a constant after unrolling, so v stays in registers).
        float pc[4][CC];
#pragma unroll
        for (int c = 0; c < CC; ++c) {
          if (w[0] != 0.f) pc[0][c] = k < 3 ? v[(k + 1) * CC + c] : p.color[(pix + 1) * CC + c];
          if (w[1] != 0.f) pc[1][c] = p.color[(pix + p.W) * CC + c];
          if (w[2] != 0.f) pc[2][c] = k > 0 ? v[(k - 1) * CC + c] : p.color[(pix - 1) * CC + c];
          if (w[3] != 0.f) pc[3][c] = p.color[(pix - p.W) * CC + c];
        }
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (w[j] != 0.f)
#pragma unroll
            for (int c = 0; c < CC; ++c) o[k * CC + c] += w[j] * (pc[j][c] - v[k * CC + c]);
      }
    }
    float4* dst = reinterpret_cast<float4*>(p.out + pix0 * CC);
#pragma unroll
    for (int k = 0; k < CC; ++k) dst[k] = make_float4(o[4 * k], o[4 * k + 1], o[4 * k + 2], o[4 * k + 3]);
  }
}

// Element offsets of dy: of pixel (n, x, y) = pix, and between horizontal / vertical neighbours. dy is
// read in place whatever its strides (the gradient of out.sum() is an expanded, all-zero-stride tensor).
struct DyLayout {
  int64_t cs, sx, sy, sn;
  __device__ __forceinline__ int64_t at(int64_t pix, int64_t C, int64_t n, int x, int y, bool contig) const {
    return contig ? pix * C : n * sn + (int64_t)y * sy + (int64_t)x * sx;
  }
};
__device__ __forceinline__ DyLayout dy_layout(const AntialiasParams& p) {
  DyLayout d;
  if (p.dy_contig) {
    d.cs = 1;
    d.sx = p.C;
    d.sy = p.W * p.C;
    d.sn = p.H * p.W * p.C;
  } else {
    d.cs = p.dy_s[3];
    d.sx = p.dy_s[2];
    d.sy = p.dy_s[1];
    d.sn = p.dy_s[0];
  }
  return d;
}

// dy rows of the items' targets for pixel row g0 (slot order right, up, left, down).
__device__ __forceinline__ void partner_rows(const DyLayout& d, const float* g0, const bool (&at_partner)[4],
                                             const float* (&gt)[4]) {
  gt[0] = at_partner[0] ? g0 + d.sx : g0;
  gt[1] = at_partner[1] ? g0 + d.sy : g0;
  gt[2] = at_partner[2] ? g0 - d.sx : g0;
  gt[3] = at_partner[3] ? g0 - d.sy : g0;
}

// Position gradient of the item that pixel (x, y) = pix of image n starts towards its right (q = 0) or
// upper (q = 1) neighbour, an item the forward accepted: re-evaluated for its geometry (without the
// topology), then atomics or (DET) entries in slots pix * 4 + q * 2 + e. d0: dy offset of pix.
template <bool DET>
__device__ __forceinline__ void item_pos_grad(const AntialiasParams& p, const DyLayout& d, int64_t n, int x, int y,
                                              int64_t pix, int64_t d0, int q, uint64_t* det_keys, float* det_vals) {
  const bool vertical = q == 1;
  const int xb = vertical ? x : x + 1, yb = vertical ? y + 1 : y;
  const Item it = eval_item(p, n, x, y, xb, yb, vertical, false);
  if (!it.ok || !it.has_grad) return;
  const int64_t C = p.C;
  const int64_t pa = pix, pb = vertical ? pix + p.W : pix + 1;
  const float* gt = p.dy + (it.target ? d0 + (vertical ? d.sy : d.sx) : d0);
  const float* ca = p.color + pa * C;
  const float* cb = p.color + pb * C;
  float Dsum = 0.f;
  for (int64_t c = 0; c < C; ++c) Dsum += gt[c * d.cs] * (cb[c] - ca[c]);
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
// One vector atomic per vertex on sm_90 from CUDA 12.1 on (z gets 0); older toolkits / archs use scalars.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && \
    (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 1))
      atomicAdd(reinterpret_cast<float4*>(gp), make_float4(gx, gy, 0.f, gw));
#else
      atomicAdd(gp + 0, gx);
      atomicAdd(gp + 1, gy);
      atomicAdd(gp + 3, gw);
#endif
    }
  }
}

// Zeroes the first n floats of grad_pos (a colour-only pass does it for the position pass that follows on
// the stream, sparing a memset call); n = 0: nothing.
__device__ __forceinline__ void zero_grad_pos(const AntialiasParams& p, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p.grad_pos[i] = 0.f;
}

// Colour gradient of one pixel, gathered like the forward (out[target] += α (c[P1] − c[P0]): P1 gains
// α dy[target], P0 loses it). d0: dy offset of pix.
template <int CC>
__device__ __forceinline__ void bwd_color_pixel(const AntialiasParams& p, const DyLayout& d, const uint8_t* flags,
                                                const float2* alpha, int64_t pix, int x, int y, int64_t d0) {
  const int64_t C = CC > 0 ? CC : p.C;
  const float* g0 = p.dy + d0;
  const Touch tc = touching(p, flags, pix, x, y);
  float w[4];
  bool at_partner[4];
  backward_weights(p, alpha, tc, pix, w, at_partner);
  const float* gt[4];  // dy rows of the items' targets
  partner_rows(d, g0, at_partner, gt);
  float* gc = p.grad_color + pix * C;
  if constexpr (CC > 0) {
    float acc[CC];
#pragma unroll
    for (int c = 0; c < CC; ++c) acc[c] = g0[c * d.cs];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      if (w[k] != 0.f)
#pragma unroll
        for (int c = 0; c < CC; ++c) acc[c] += w[k] * gt[k][c * d.cs];
#pragma unroll
    for (int c = 0; c < CC; ++c) gc[c] = acc[c];
  } else {
    for (int64_t c = 0; c < C; ++c) {
      float acc = g0[c * d.cs];
      for (int k = 0; k < 4; ++k)
        if (w[k] != 0.f) acc += w[k] * gt[k][c * d.cs];
      gc[c] = acc;
    }
  }
}

// Backward over every pixel: colour gradient; with POS, the position gradients of the items the pixel
// starts (atomics, or DET entries for the sorted reduction).
template <int CC, bool DET, bool POS>
__global__ void antialias_bwd_kernel(AntialiasParams p, const uint8_t* flags, const float2* alpha, uint64_t* det_keys,
                                     float* det_vals, int64_t zero_pos) {
  zero_grad_pos(p, zero_pos);
  const int64_t total = p.N * p.H * p.W;
  const int64_t C = CC > 0 ? CC : p.C;
  const DyLayout d = dy_layout(p);
  const bool contig = p.dy_contig != 0;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    int64_t n;
    int x, y;
    pixel_coords(p, pix, n, x, y);
    const int64_t d0 = d.at(pix, C, n, x, y, contig);
    bwd_color_pixel<CC>(p, d, flags, alpha, pix, x, y, d0);
    if constexpr (DET) {
      for (int s = 0; s < 4; ++s) det_keys[pix * 4 + s] = NVDR_SKIP_KEY;
    }
    if constexpr (POS) {
      const unsigned f = flags[pix];
      for (int q = 0; q < 2; ++q)
        if (f & (NVDR_AA_RIGHT_GRAD << q)) item_pos_grad<DET>(p, d, n, x, y, pix, d0, q, det_keys, det_vals);
    }
  }
}

// Colour gradient for images with W % 4 == 0, four pixels per thread (bwd_color_pixel's order, float4
// stores).
// How the colour-gradient quads read dy: any strides, dense and 16-byte aligned (float4 loads), or one
// value per channel for every pixel (all pixel strides 0: the gradient of out.sum()).
enum DyMode { kDyStrided = 0, kDyDense4 = 1, kDyUniform = 2 };

template <int CC, int DYMODE>
__global__ void antialias_bwd4_kernel(AntialiasParams p, const uint8_t* flags, const float2* alpha, int64_t zero_pos) {
  zero_grad_pos(p, zero_pos);
  const int64_t quads = p.N * p.H * p.W / 4;
  const DyLayout d = dy_layout(p);
  const bool contig = p.dy_contig != 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < quads; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t pix0 = i * 4;
    int64_t n;
    int x0, y;
    pixel_coords(p, pix0, n, x0, y);
    const int64_t d00 = d.at(pix0, CC, n, x0, y, contig);
    const QuadFlags qf = quad_flags(p, flags, pix0, x0, y);
    float o[4 * CC];
    if constexpr (DYMODE == kDyDense4) {
      const float4* src = reinterpret_cast<const float4*>(p.dy + pix0 * CC);
#pragma unroll
      for (int k = 0; k < CC; ++k) {
        const float4 f = src[k];
        o[4 * k] = f.x;
        o[4 * k + 1] = f.y;
        o[4 * k + 2] = f.z;
        o[4 * k + 3] = f.w;
      }
    } else if constexpr (DYMODE == kDyUniform) {
#pragma unroll
      for (int c = 0; c < CC; ++c) {
        const float v = p.dy[c * d.cs];
#pragma unroll
        for (int k = 0; k < 4; ++k) o[k * CC + c] = v;
      }
    } else {
#pragma unroll
      for (int k = 0; k < 4; ++k)
#pragma unroll
        for (int c = 0; c < CC; ++c) o[k * CC + c] = p.dy[d00 + k * d.sx + c * d.cs];
    }
    if (qf.touched()) {
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const Touch tc = qf.pixel(k);
        if (!tc.own && !tc.left && !tc.down) continue;
        const int64_t pix = pix0 + k;
        const float* g0 = p.dy + d00 + k * d.sx;
        float w[4];
        bool at_partner[4];
        backward_weights(p, alpha, tc, pix, w, at_partner);
        const float* gt[4];
        partner_rows(d, g0, at_partner, gt);
#pragma unroll
        for (int j = 0; j < 4; ++j)
          if (w[j] != 0.f)
#pragma unroll
            for (int c = 0; c < CC; ++c) o[k * CC + c] += w[j] * gt[j][c * d.cs];
      }
    }
    float4* dst = reinterpret_cast<float4*>(p.grad_color + pix0 * CC);
#pragma unroll
    for (int k = 0; k < CC; ++k) dst[k] = make_float4(o[4 * k], o[4 * k + 1], o[4 * k + 2], o[4 * k + 3]);
  }
}

// Backward, compacted: position gradients of the items the forward listed.
__global__ void antialias_pos_list_kernel(AntialiasParams p, const uint32_t* grad_items) {
  const unsigned cnt = grad_items[0];
  const DyLayout d = dy_layout(p);
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < cnt; i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t code = grad_items[1 + i];
    const int64_t pix = code >> 1;
    int64_t n;
    int x, y;
    pixel_coords(p, pix, n, x, y);
    const int64_t d0 = d.at(pix, p.C, n, x, y, p.dy_contig != 0);
    item_pos_grad<false>(p, d, n, x, y, pix, d0, (int)(code & 1u), nullptr, nullptr);
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

// Calls f(std::integral_constant<int, CC>) with the channel count as a constant for the common counts
// (1: masks, 3: RGB, 4: RGBA) and 0 (any count) otherwise.
template <class F>
cudaError_t with_channels(int64_t C, F&& f) {
  switch (C) {
    case 1: return f(std::integral_constant<int, 1>());
    case 3: return f(std::integral_constant<int, 3>());
    case 4: return f(std::integral_constant<int, 4>());
    default: return f(std::integral_constant<int, 0>());
  }
}

}  // namespace

int64_t antialias_hash_capacity(int64_t T) {
  int64_t need = 6 * (T > 0 ? T : 1);
  int64_t cap = 64;
  while (cap < need) cap <<= 1;
  return cap;
}

cudaError_t antialias_build_hash_cuda(const int* tri, int64_t T, AntialiasHash h, int* nbr, int* gate,
                                      cudaStream_t stream) {
  if (h.capacity <= 0 || (h.capacity & (h.capacity - 1)) != 0 || !nbr) return cudaErrorInvalidValue;
  hash_clear_kernel<<<nvdr_grid_1d(h.capacity, kBlock), kBlock, 0, stream>>>(h, nullptr, 0, gate);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  if (T > 0) {
    hash_build_kernel<<<nvdr_grid_1d(3 * T, kBlock), kBlock, 0, stream>>>(tri, T, h, nullptr, 0);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    hash_neighbors_kernel<<<nvdr_grid_1d(3 * T, kBlock), kBlock, 0, stream>>>(tri, T, h, nbr, nullptr, 0, nullptr);
    NVDR_RETURN_IF_LAUNCH_ERROR();
  }
  return cudaSuccess;
}

cudaError_t antialias_refresh_hash_cuda(const int* tri, int* tri_copy, int64_t T, AntialiasHash h, int* nbr,
                                        int* gate, int epoch, cudaStream_t stream) {
  if (h.capacity <= 0 || (h.capacity & (h.capacity - 1)) != 0 || !nbr || !gate || epoch == 0)
    return cudaErrorInvalidValue;
  if (T <= 0) return cudaSuccess;
  // One cooperative launch where the device supports it (grid sized to be co-resident).
  int dev = 0, coop = 0, sms = 0, per_sm = 0;
  NVDR_RETURN_IF_ERROR(cudaGetDevice(&dev));
  NVDR_RETURN_IF_ERROR(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  if (coop) {
    NVDR_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    NVDR_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, topology_refresh_kernel, kBlock, 0));
  }
  if (coop && per_sm > 0) {
    const int64_t work = 3 * T > h.capacity ? 3 * T : h.capacity;
    const int64_t most = (int64_t)per_sm * sms;
    const unsigned blocks = (unsigned)((work + kBlock - 1) / kBlock < most ? (work + kBlock - 1) / kBlock : most);
    void* args[] = {(void*)&tri, (void*)&tri_copy, (void*)&T, (void*)&h, (void*)&nbr, (void*)&gate, (void*)&epoch};
    return cudaLaunchCooperativeKernel((const void*)topology_refresh_kernel, dim3(blocks), dim3(kBlock), args, 0,
                                       stream);
  }
  tri_compare_kernel<<<nvdr_grid_1d(3 * T, kBlock, kGateGrid), kBlock, 0, stream>>>(tri, tri_copy, 3 * T, gate, epoch);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  hash_clear_kernel<<<nvdr_grid_1d(h.capacity, kBlock, kGateGrid), kBlock, 0, stream>>>(h, gate, epoch, nullptr);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  hash_build_kernel<<<nvdr_grid_1d(3 * T, kBlock, kGateGrid), kBlock, 0, stream>>>(tri, T, h, gate, epoch);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  hash_neighbors_kernel<<<nvdr_grid_1d(3 * T, kBlock, kGateGrid), kBlock, 0, stream>>>(tri, T, h, nbr, gate, epoch,
                                                                                      tri_copy);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}

// Grid of the list kernels, whose item count lives on the device (no host synchronization).
static int list_grid(int64_t max_items) { return nvdr_grid_1d(max_items, kBlock, 1024); }

// Per-call silhouette bits (see antialias_silhouette_kernel) in scratch memory when triangles are few
// per pixel; otherwise the items probe the neighbour table themselves.
// Returns in *count_zeroed whether the kernel zeroed `count` (the item counter; may be nullptr).
static cudaError_t with_silhouettes(AntialiasParams& p, const NvdrAllocator& alloc, cudaStream_t stream,
                                    uint32_t* count = nullptr, bool* count_zeroed = nullptr) {
  if (count_zeroed) *count_zeroed = false;
  p.sil = nullptr;
  p.proj = nullptr;
  const int64_t images = p.pos_batched ? p.N : 1;
  // Worth it while triangles are few per pixel (one thread per triangle and image).
  if (p.T <= 0 || images * p.T * 16 > p.N * p.H * p.W || images * p.T > (int64_t(1) << 30)) return cudaSuccess;
  uint8_t* sil = alloc.get<uint8_t>(images * p.T);
  double2* proj = alloc.get<double2>(images * p.T * 3);
  if (!sil || !proj) return cudaErrorMemoryAllocation;
  antialias_silhouette_kernel<<<nvdr_grid_1d(images * p.T, kBlock), kBlock, 0, stream>>>(p, images, sil, proj,
                                                                                          count);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  p.sil = sil;
  p.proj = proj;
  if (count_zeroed) *count_zeroed = count != nullptr;
  return cudaSuccess;
}

cudaError_t antialias_fwd_cuda(const AntialiasParams& p_in, uint8_t* flags, float* alpha, uint32_t* grad_items,
                               const NvdrAllocator& alloc, cudaStream_t stream) {
  AntialiasParams p = p_in;
  const int64_t total = p.N * p.H * p.W;
  if (!p.nbr || !flags || !alpha) return cudaErrorInvalidValue;
  bool zeroed = false;
  if (total > 0) NVDR_RETURN_IF_ERROR(with_silhouettes(p, alloc, stream, grad_items, &zeroed));
  if (grad_items && !zeroed) NVDR_RETURN_IF_ERROR(cudaMemsetAsync(grad_items, 0, sizeof(uint32_t), stream));
  if (total <= 0) return cudaSuccess;
  float2* a = reinterpret_cast<float2*>(alpha);
  if (grad_items) {
    if (2 * total + 1 >= (int64_t(1) << 32)) return cudaErrorInvalidValue;
    antialias_items_kernel<<<nvdr_grid_1d(total, kClassifyPix), kBlock, 0, stream>>>(p, flags, a, grad_items);
  } else {
    antialias_eval_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, flags, a);
  }
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return with_channels(p.C, [&](auto cc) {
    constexpr int CC = decltype(cc)::value;
    if constexpr (CC > 0) {
      // Quads move as float4: rows of a multiple of 4 pixels and a 16-byte aligned colour.
      if (p.W % 4 == 0 && reinterpret_cast<uintptr_t>(p.color) % 16 == 0 && reinterpret_cast<uintptr_t>(p.out) % 16 == 0) {
        antialias_gather4_kernel<CC><<<nvdr_grid_1d(total / 4, kBlock), kBlock, 0, stream>>>(p, flags, a);
        return cudaGetLastError();
      }
    }
    antialias_gather_kernel<CC><<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, flags, a);
    return cudaGetLastError();
  });
}

// A second stream per device (created on first use, kept for the process) with a fork/join event pair,
// used under g_side_mutex. nullptr where none could be made: the caller then stays on its own stream.
struct SideStream {
  cudaStream_t stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  bool failed = false;
};
constexpr int kMaxSideDevices = 64;
static std::mutex g_side_mutex;
static SideStream g_side[kMaxSideDevices];

static SideStream* side_stream() {
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxSideDevices) {
    cudaGetLastError();
    return nullptr;
  }
  SideStream& s = g_side[dev];
  if (!s.stream && !s.failed) {
    if (cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking) != cudaSuccess ||
        cudaEventCreateWithFlags(&s.fork, cudaEventDisableTiming) != cudaSuccess ||
        cudaEventCreateWithFlags(&s.join, cudaEventDisableTiming) != cudaSuccess) {
      cudaGetLastError();  // clear the error; run without a side stream from now on
      s.failed = true;
      s.stream = nullptr;
    }
  }
  return s.failed ? nullptr : &s;
}

cudaError_t antialias_bwd_cuda(const AntialiasParams& p_in, const uint8_t* flags, const float* alpha,
                               const uint32_t* grad_items, int deterministic, const NvdrAllocator& alloc,
                               cudaStream_t stream) {
  AntialiasParams p = p_in;
  p.sil = nullptr;
  p.proj = nullptr;
  const int64_t rows = (p.pos_batched ? p.N : 1) * p.V;
  const int64_t total = p.N * p.H * p.W;
  const float2* a = reinterpret_cast<const float2*>(alpha);
  if (!flags || !a) grad_items = nullptr;  // the items are evaluated again below
  // The colour-only pass zeroes grad_pos for the listed position pass; every other path clears it here.
  const bool lean = !deterministic && grad_items && total > 0;
  if (!lean) NVDR_RETURN_IF_ERROR(cudaMemsetAsync(p.grad_pos, 0, (size_t)(rows * 4) * sizeof(float), stream));
  if (total <= 0) return cudaSuccess;
  if (!flags || !a) {  // no saved forward state: evaluate the items again
    if (!p.nbr) return cudaErrorInvalidValue;
    uint8_t* f_new = alloc.get<uint8_t>(total);
    float2* a_new = alloc.get<float2>(total);
    if (!f_new || !a_new) return cudaErrorMemoryAllocation;
    NVDR_RETURN_IF_ERROR(with_silhouettes(p, alloc, stream));
    antialias_eval_kernel<<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p, f_new, a_new);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    flags = f_new;
    a = a_new;
  }
  const int grid = nvdr_grid_1d(total, kBlock);
  if (lean) {
    // Lean colour pass over every pixel, and the listed items for the position gradient: beside it on a
    // side stream when one is available (disjoint outputs; one pass is bandwidth-bound, the other
    // latency-bound), else after it on this stream with the colour pass zeroing grad_pos.
    std::unique_lock<std::mutex> lock(g_side_mutex);  // the side stream's events are shared: hold until joined
    SideStream* side = side_stream();
    if (side) {
      NVDR_RETURN_IF_ERROR(cudaEventRecord(side->fork, stream));
      NVDR_RETURN_IF_ERROR(cudaStreamWaitEvent(side->stream, side->fork, 0));
      NVDR_RETURN_IF_ERROR(cudaMemsetAsync(p.grad_pos, 0, (size_t)(rows * 4) * sizeof(float), side->stream));
      antialias_pos_list_kernel<<<list_grid(2 * total), kBlock, 0, side->stream>>>(p, grad_items);
      NVDR_RETURN_IF_LAUNCH_ERROR();
      NVDR_RETURN_IF_ERROR(cudaEventRecord(side->join, side->stream));
    } else {
      lock.unlock();
    }
    const int64_t zero = side ? 0 : rows * 4;
    NVDR_RETURN_IF_ERROR(with_channels(p.C, [&](auto cc) {
      constexpr int CC = decltype(cc)::value;
      if constexpr (CC > 0) {
        if (p.W % 4 == 0 && reinterpret_cast<uintptr_t>(p.grad_color) % 16 == 0) {
          const int g4 = nvdr_grid_1d(total / 4, kBlock);
          if (p.dy_contig && reinterpret_cast<uintptr_t>(p.dy) % 16 == 0)
            antialias_bwd4_kernel<CC, kDyDense4><<<g4, kBlock, 0, stream>>>(p, flags, a, zero);
          else if (!p.dy_contig && p.dy_s[0] == 0 && p.dy_s[1] == 0 && p.dy_s[2] == 0)
            antialias_bwd4_kernel<CC, kDyUniform><<<g4, kBlock, 0, stream>>>(p, flags, a, zero);
          else
            antialias_bwd4_kernel<CC, kDyStrided><<<g4, kBlock, 0, stream>>>(p, flags, a, zero);
          return cudaGetLastError();
        }
      }
      antialias_bwd_kernel<CC, false, false><<<grid, kBlock, 0, stream>>>(p, flags, a, nullptr, nullptr, zero);
      return cudaGetLastError();
    }));
    if (side) return cudaStreamWaitEvent(stream, side->join, 0);
    antialias_pos_list_kernel<<<list_grid(2 * total), kBlock, 0, stream>>>(p, grad_items);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    return cudaSuccess;
  }
  if (!deterministic) {
    return with_channels(p.C, [&](auto cc) {
      antialias_bwd_kernel<decltype(cc)::value, false, true><<<grid, kBlock, 0, stream>>>(p, flags, a, nullptr,
                                                                                           nullptr, 0);
      return cudaGetLastError();
    });
  }
  const int64_t n = total * 4;
  uint64_t* keys = alloc.get<uint64_t>(n);
  float* vals = alloc.get<float>(n * 3);
  if (!keys || !vals) return cudaErrorMemoryAllocation;
  NVDR_RETURN_IF_ERROR(with_channels(p.C, [&](auto cc) {
    antialias_bwd_kernel<decltype(cc)::value, true, true><<<grid, kBlock, 0, stream>>>(p, flags, a, keys, vals, 0);
    return cudaGetLastError();
  }));
  NvdrSortedSegments s;
  NVDR_RETURN_IF_ERROR(nvdr_sort_segments(keys, n, (uint64_t)(rows > 0 ? rows - 1 : 0), alloc, stream, &s));
  antialias_det_reduce_kernel<<<nvdr_grid_1d(n, kBlock), kBlock, 0, stream>>>(p, s, vals);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}
