// CUDA rasterizer: see rasterize.h for the pipeline. Spec: API.md §3.3, §3.4, §4.1.
//
// Coverage is decided by homogeneous rasterization (Olano & Greer) in float64 instead of polygon
// clipping and fixed-point snapping. For pixel sample (X, Y) in NDC and clip-space vertices p_i,
// A_k(X, Y) = a_k + b_k X + c_k Y = cross(q_j, q_l) with q_i = (x_i - X w_i, y_i - Y w_i) and
// (k, j, l) cyclic. With D = sum a_k w_k, the pixel sees the w > 0 part of the triangle iff every
// sign(D) A_k >= 0; adding -1 <= z/w <= 1 gives exactly what clipping against the six planes
// -w <= x, y, z <= w covers (the x/y planes are the viewport). No vertices are created, so shared
// edges stay watertight through clipping. The coefficients are differences of two products, so the
// same edge seen from the neighbouring triangle yields exactly negated values and a sample lying on
// it gets opposite signs from both sides; on an exact zero the edge owns the sample iff its inward
// normal sign(D)(b_k, c_k) points to larger columns, or is vertical and points to larger rows.
//
// The arithmetic follows the reference backend operation by operation (explicit round-to-nearest
// intrinsics, so the compiler cannot fuse differently in different kernels): the visibility test,
// the reported z/w and the depth-peeling comparison all see the same float32 depth. Only the
// resolve pass's u, v and derivatives take one reciprocal instead of divisions (float32 outputs).
#include "kernels/rasterize.h"

#include <cfloat>
#include <cstdint>

namespace nvdr {
namespace {

typedef unsigned long long u64;

constexpr int kBandRows = 32;            // rows of one queued work item (a band)
// Every triangle is walked by a whole warp: lanes first take one row each and compute its column
// span, then the spans' pixels are dealt out 32 at a time, so lanes stay busy whatever the shape
// (long slivers, wide rows). A triangle whose bounding box has more rows or pixels than below is
// queued instead and its bands spread over many warps.
constexpr int kQueueRows = 2 * kBandRows;
constexpr int64_t kQueueArea = 4096;
// Below this many triangle instances each warp sets up a single triangle (every lane the same
// one), so small jobs still spread over the whole GPU; above it each lane sets up its own and the
// warp walks its 32 triangles one after another.
constexpr int64_t kFewTriangles = 65536;
// The setup pass runs over chunks of at most kChunk triangle instances. Within a chunk one 64-bit
// counter packs (queued entries << kEntryShift) + (row bands queued), so one atomicAdd per warp gives
// its queued triangles their slots and the indices of their first bands, both in the same order: the
// band -> entry map is a binary search, with no scan pass. kChunk * (2^20 / kBandRows + 1) bands
// fit below 2^kEntryShift, and kChunk entries below 2^(64 - kEntryShift).
constexpr int64_t kChunk = int64_t(1) << 23;
constexpr int kEntryShift = 40;
constexpr unsigned long long kBandMask = (1ull << kEntryShift) - 1;
constexpr u64 kEmpty = ~0ull;
constexpr int kBlock = 256;

struct Counters {
  u64 packed;  // (entries << kEntryShift) + bands of the current chunk
  u64 cursor;  // band work cursor of the large-triangle kernel
  u64 pad[2];
};

struct BigEntry {
  int image;
  int tri;
  int r0, r1;  // rows of the bounding box
  int c0, c1;  // columns of the bounding box
};

struct Scratch {
  u64* depth;
  Counters* counters;
  BigEntry* entries;
  u64* band_start;  // per entry: index of its first band
  double* xs;       // NDC of pixel-centre columns [W]
  double* ys;       // NDC of pixel-centre rows [H]
  int64_t capacity;
};

inline size_t align_up(size_t x) { return (x + 255) & ~size_t(255); }

Scratch carve(void* base, int64_t pixels, int64_t capacity, int H, int W) {
  char* p = static_cast<char*>(base);
  Scratch s;
  s.depth = reinterpret_cast<u64*>(p);
  p += align_up(size_t(pixels) * sizeof(u64));
  s.counters = reinterpret_cast<Counters*>(p);
  p += align_up(sizeof(Counters));
  s.entries = reinterpret_cast<BigEntry*>(p);
  p += align_up(size_t(capacity) * sizeof(BigEntry));
  s.band_start = reinterpret_cast<u64*>(p);
  p += align_up(size_t(capacity) * sizeof(u64));
  s.xs = reinterpret_cast<double*>(p);
  p += align_up(size_t(W) * sizeof(double));
  s.ys = reinterpret_cast<double*>(p);
  s.capacity = capacity;
  return s;
}

// ------------------------------------------------------------------------------------ numerics

#define DMUL __dmul_rn
#define DADD __dadd_rn
#define DSUB __dsub_rn
#define DDIV __ddiv_rn

// (2c + 1) / W - 1
__device__ __forceinline__ double pixel_center(int c, int size) {
  return DSUB(DDIV(DADD(DMUL(2.0, double(c)), 1.0), double(size)), 1.0);
}

struct TriSetup {
  double a[3], b[3], c[3];  // A_k = a_k + b_k X + c_k Y (unsigned)
  double sa[3], sb[3], sc[3];  // times sign(D)
  double dz0, dz1, dz2;     // z/w = dz0 + dz1 X + dz2 Y
  bool tie[3];
};

__device__ __forceinline__ bool finite4(const float4& v) {
  return fabsf(v.x) <= FLT_MAX && fabsf(v.y) <= FLT_MAX && fabsf(v.z) <= FLT_MAX && fabsf(v.w) <= FLT_MAX;
}

// Edge coefficients and the depth plane; false for a triangle seen edge-on (D == 0).
__device__ __forceinline__ bool make_setup(const float4& p0, const float4& p1, const float4& p2, TriSetup& s) {
  const double x[3] = {p0.x, p1.x, p2.x}, y[3] = {p0.y, p1.y, p2.y};
  const double z[3] = {p0.z, p1.z, p2.z}, w[3] = {p0.w, p1.w, p2.w};
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const int j = (k + 1) % 3, l = (k + 2) % 3;
    s.a[k] = DSUB(DMUL(x[j], y[l]), DMUL(y[j], x[l]));
    s.b[k] = DSUB(DMUL(w[l], y[j]), DMUL(w[j], y[l]));
    s.c[k] = DSUB(DMUL(w[j], x[l]), DMUL(w[l], x[j]));
  }
  const double D = DADD(DADD(DMUL(s.a[0], w[0]), DMUL(s.a[1], w[1])), DMUL(s.a[2], w[2]));
  if (D == 0.0 || !(fabs(D) <= DBL_MAX)) return false;
  const bool neg = D < 0.0;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    s.sa[k] = neg ? -s.a[k] : s.a[k];
    s.sb[k] = neg ? -s.b[k] : s.b[k];
    s.sc[k] = neg ? -s.c[k] : s.c[k];
    s.tie[k] = s.sb[k] > 0.0 || (s.sb[k] == 0.0 && s.sc[k] > 0.0);
  }
  s.dz0 = DDIV(DADD(DADD(DMUL(s.a[0], z[0]), DMUL(s.a[1], z[1])), DMUL(s.a[2], z[2])), D);
  s.dz1 = DDIV(DADD(DADD(DMUL(s.b[0], z[0]), DMUL(s.b[1], z[1])), DMUL(s.b[2], z[2])), D);
  s.dz2 = DDIV(DADD(DADD(DMUL(s.c[0], z[0]), DMUL(s.c[1], z[1])), DMUL(s.c[2], z[2])), D);
  return true;
}

__device__ __forceinline__ bool covers(const TriSetup& s, double X, double Y) {
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const double A = DADD(DADD(s.sa[k], DMUL(s.sb[k], X)), DMUL(s.sc[k], Y));
    if (!(A > 0.0 || (A == 0.0 && s.tie[k]))) return false;
  }
  return true;
}

// Conservative column range of row Y inside all three edges, so a thread or lane only visits about
// the covered pixels of its row instead of the whole bounding box; every candidate still goes
// through the exact covers() test. isb = 1 / sb (inexact reciprocals are fine), or 0 for an edge
// whose bound is unreliable (see span_recips); such edges are left to covers(). covers() itself
// errs by less than the quarter column allowed there, so a pixel that it accepts lies less than
// half a column outside the computed bound: half a column of margin keeps every such pixel.
// False if the row is certainly empty.
__device__ __forceinline__ bool row_span(const TriSetup& s, const double isb[3], double Y, int W, int& c0, int& c1) {
  double lo = -1.0e300, hi = 1.0e300;
  const double half_w = 0.5 * W;
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const double scy = DMUL(s.sc[k], Y);
    const double base = DADD(s.sa[k], scy);  // A_k at X = 0, exactly as covers() for sb = 0
    if (s.sb[k] == 0.0) {
      if (base < 0.0 || (base == 0.0 && !s.tie[k])) return false;
      continue;
    }
    if (isb[k] == 0.0) continue;
    const double x = -base * isb[k];
    if (s.sb[k] > 0.0) lo = fmax(lo, x); else hi = fmin(hi, x);
  }
  // X = (2c + 1) / W - 1  <=>  c = (X + 1) W / 2 - 1/2
  const double a = fmax(ceil((lo + 1.0) * half_w - 1.0), 0.0);
  const double b = fmin(floor((hi + 1.0) * half_w), double(W - 1));
  if (!(a <= b)) return false;  // also false for NaN
  c0 = int(a);
  c1 = int(b);
  return true;
}

// Per-triangle part of row_span: 1 / sb_k, or 0 where the edge bound's rounding error could reach
// a quarter column in some row (huge, nearly cancelling coefficients). |Y| <= 1 bounds |sc_k Y| by
// |sc_k|, so one test covers every row.
__device__ __forceinline__ void span_recips(const TriSetup& s, int W, double isb[3]) {
#pragma unroll
  for (int k = 0; k < 3; ++k) {
    const double r = s.sb[k] != 0.0 ? 1.0 / s.sb[k] : 0.0;
    const double err_cols = (fabs(s.sa[k]) + fabs(s.sc[k]) + fabs(s.sb[k])) * 1.0e-15 * fabs(r) * (0.5 * W);
    isb[k] = err_cols < 0.25 ? r : 0.0;
  }
}

__device__ __forceinline__ double plane_depth(const TriSetup& s, double X, double Y) {
  return DADD(DADD(s.dz0, DMUL(s.dz1, X)), DMUL(s.dz2, Y));
}

// Order-preserving map of a float to an unsigned key.
__device__ __forceinline__ unsigned depth_key(float d) {
  const unsigned b = __float_as_uint(d);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Loads triangle t's vertices for image n; false for bad indices, non-finite positions, or a
// triangle wholly outside one frustum plane (or wholly at w <= 0).
__device__ __forceinline__ bool load_triangle(const float* pos, const int* tri, int64_t V, bool instanced, int n,
                                              int64_t t, float4& a, float4& b, float4& c) {
  const int* tp = tri + t * 3;
  const int i0 = tp[0], i1 = tp[1], i2 = tp[2];
  if (i0 < 0 || i1 < 0 || i2 < 0 || i0 >= V || i1 >= V || i2 >= V) return false;
  const float4* vb = reinterpret_cast<const float4*>(pos) + (instanced ? (int64_t)n * V : 0);
  a = vb[i0];
  b = vb[i1];
  c = vb[i2];
  if (!(finite4(a) && finite4(b) && finite4(c))) return false;
  if (a.w <= 0.f && b.w <= 0.f && c.w <= 0.f) return false;
  if (a.x > a.w && b.x > b.w && c.x > c.w) return false;
  if (a.x < -a.w && b.x < -b.w && c.x < -c.w) return false;
  if (a.y > a.w && b.y > b.w && c.y > c.w) return false;
  if (a.y < -a.w && b.y < -b.w && c.y < -c.w) return false;
  if (a.z > a.w && b.z > b.w && c.z > c.w) return false;
  if (a.z < -a.w && b.z < -b.w && c.z < -c.w) return false;
  return true;
}

struct PixelBox {
  int c0, c1, r0, r1;  // inclusive; empty if c0 > c1 or r0 > r1
};

// Conservative bounds of the projected triangle; the whole viewport if a vertex has w <= 0.
__device__ __forceinline__ PixelBox pixel_box(const float4& p0, const float4& p1, const float4& p2, int W, int H) {
  PixelBox bx;
  if (!(p0.w > 0.f && p1.w > 0.f && p2.w > 0.f)) {
    bx.c0 = 0;
    bx.c1 = W - 1;
    bx.r0 = 0;
    bx.r1 = H - 1;
    return bx;
  }
  const float4 p[3] = {p0, p1, p2};
  double xmin = DBL_MAX, xmax = -DBL_MAX, ymin = DBL_MAX, ymax = -DBL_MAX;
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    const double px = DSUB(DMUL(DADD(DDIV(double(p[i].x), double(p[i].w)), 1.0), 0.5 * W), 0.5);
    const double py = DSUB(DMUL(DADD(DDIV(double(p[i].y), double(p[i].w)), 1.0), 0.5 * H), 0.5);
    xmin = fmin(xmin, px);
    xmax = fmax(xmax, px);
    ymin = fmin(ymin, py);
    ymax = fmax(ymax, py);
  }
  const double fx0 = floor(xmin), fx1 = ceil(xmax), fy0 = floor(ymin), fy1 = ceil(ymax);
  bx.c0 = fx0 < 0.0 ? 0 : (fx0 > W - 1 ? W : int(fx0));
  bx.c1 = fx1 > W - 1 ? W - 1 : (fx1 < 0.0 ? -1 : int(fx1));
  bx.r0 = fy0 < 0.0 ? 0 : (fy0 > H - 1 ? H : int(fy0));
  bx.r1 = fy1 > H - 1 ? H - 1 : (fy1 < 0.0 ? -1 : int(fy1));
  return bx;
}

struct FragCtx {
  unsigned low;       // bit-inverted triangle index: on equal depth the higher index wins
  int64_t img_base;   // n * H * W
  int W;
  const float* prev;  // previous depth-peeling layer or null
  u64* depth;
  bool filter;        // read the visibility word before the atomic (see visit())
};

// Visibility key of the fragment at (c, r), or kEmpty if it is clipped by the near/far planes or
// discarded by depth peeling.
__device__ __forceinline__ u64 fragment_key(const FragCtx& f, const TriSetup& s, int64_t pix, double X, double Y) {
  const double d = plane_depth(s, X, Y);
  if (!(d >= -1.0 && d <= 1.0)) return kEmpty;  // near / far planes
  const float d32 = __fadd_rn(__double2float_rn(d), 0.0f);  // -0 -> +0
  if (f.prev) {
    const float2 zw = *reinterpret_cast<const float2*>(f.prev + pix * 4 + 2);
    if (zw.y == 0.0f) return kEmpty;   // empty in the previous layer stays empty
    if (!(d32 > zw.x)) return kEmpty;  // at or in front of the previous layer
  }
  return ((u64)depth_key(d32) << 32) | (u64)f.low;
}

constexpr unsigned kFullMask = 0xffffffffu;

// One candidate pixel. With f.filter, the current visibility word is read first and only a
// fragment that beats it issues the atomic: a stale value can only be larger than the current one
// (values only decrease), so skipping on it is safe, and at high depth complexity it saves most
// atomics. Without it the atomic needs no round trip, which is shorter at low depth complexity.
__device__ __forceinline__ void visit(const FragCtx& f, const TriSetup& ts, int64_t pix, double X, double Y) {
  if (!covers(ts, X, Y)) return;
  const u64 key = fragment_key(f, ts, pix, X, Y);
  if (key != kEmpty && (!f.filter || key < f.depth[pix])) atomicMin(f.depth + pix, key);
}

// Many triangles per pixel: likely many fragments per pixel, where filtering pays.
__device__ __forceinline__ bool use_filter(const RasterizeFwdParams& p) {
  return p.total_work * 8 > (int64_t)p.num_images * p.height * p.width;
}

// Rows r_begin..r_end, columns c_min..c_max (the bounding box) of one triangle, walked by the whole warp; every lane
// must call it with the same arguments. Lane i computes the column span of row r + i, a warp scan
// lays the spans end to end, and each round deals the next 32 pixels of that list to the lanes
// (a binary search over the scan finds a lane's row), so no lane idles on a short row.
__device__ __forceinline__ void warp_walk(const FragCtx& f, const TriSetup& ts, const double isb[3],
                                          const double* __restrict__ xs, const double* __restrict__ ys, int r_begin,
                                          int r_end, int c_min, int c_max, int lane) {
  for (int rb = r_begin; rb <= r_end; rb += 32) {
    const int r = rb + lane;
    int c0 = 0, len = 0;
    if (r <= r_end) {
      int a, b;
      if (row_span(ts, isb, ys[r], f.W, a, b)) {
        c0 = max(a, c_min);
        len = max(min(b, c_max) - c0 + 1, 0);
      }
    }
    int incl = len;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int v = __shfl_up_sync(kFullMask, incl, off);
      if (lane >= off) incl += v;
    }
    const int total = __shfl_sync(kFullMask, incl, 31);
    for (int q0 = 0; q0 < total; q0 += 32) {
      const int q = q0 + lane;
      int j = 0;  // first lane whose inclusive prefix exceeds q
#pragma unroll
      for (int step = 16; step >= 1; step >>= 1) {
        const int v = __shfl_sync(kFullMask, incl, j + step - 1);
        if (v <= q) j += step;
      }
      const int incl_j = __shfl_sync(kFullMask, incl, j);
      const int len_j = __shfl_sync(kFullMask, len, j);
      const int c0_j = __shfl_sync(kFullMask, c0, j);
      if (q < total) {
        const int row = rb + j;
        const int c = c0_j + (q - (incl_j - len_j));
        visit(f, ts, f.img_base + (int64_t)row * f.W + c, xs[c], ys[row]);
      }
    }
  }
}

// ------------------------------------------------------------------------------------ kernels

__global__ void clear_kernel(u64* __restrict__ depth, int64_t pixels, Counters* counters, double* xs, int W,
                             double* ys, int H) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i == 0) {
    counters->packed = 0;
    counters->cursor = 0;
    if (pixels & 1) depth[pixels - 1] = kEmpty;
  }
  for (int64_t j = i; j < W; j += stride) xs[j] = pixel_center(int(j), W);
  for (int64_t j = i; j < H; j += stride) ys[j] = pixel_center(int(j), H);
  ulonglong2* d2 = reinterpret_cast<ulonglong2*>(depth);
  const int64_t pairs = pixels / 2;
  for (int64_t j = i; j < pairs; j += stride) d2[j] = make_ulonglong2(kEmpty, kEmpty);
}

// Queues the flagged triangles of a warp (every lane calls it) with one atomic: the slots and the
// first bands of the warp's entries are consecutive and in lane order, so band starts increase
// with the slot across the whole queue. Returns false for a flagged lane whose slot is past the
// capacity (cannot happen: the capacity is the chunk size); that lane's triangle is then walked
// right away, and its orphan bands map past the rows of the previous entry and are skipped.
__device__ __forceinline__ bool enqueue_warp(const Scratch& s, bool want, int n, int64_t t, const PixelBox& bx,
                                             int lane) {
  const unsigned m = __ballot_sync(kFullMask, want);
  if (m == 0) return true;
  const int bands = want ? (bx.r1 - bx.r0) / kBandRows + 1 : 0;
  int incl = bands;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const int v = __shfl_up_sync(kFullMask, incl, off);
    if (lane >= off) incl += v;
  }
  const int total = __shfl_sync(kFullMask, incl, 31);
  u64 old = 0;
  if (lane == 0) old = atomicAdd(&s.counters->packed, ((u64)__popc(m) << kEntryShift) + (u64)total);
  old = __shfl_sync(kFullMask, old, 0);
  if (!want) return true;
  const u64 slot = (old >> kEntryShift) + (u64)__popc(m & ((1u << lane) - 1u));
  if ((int64_t)slot >= s.capacity) return false;
  BigEntry e;
  e.image = n;
  e.tri = int(t);
  e.r0 = bx.r0;
  e.r1 = bx.r1;
  e.c0 = bx.c0;
  e.c1 = bx.c1;
  s.entries[slot] = e;
  s.band_start[slot] = (old & kBandMask) + (u64)(incl - bands);
  return true;
}

// What a lane hands to its warp for walking (lane-per-triangle mode), through shared memory.
struct WalkItem {
  double sa[3], sb[3], sc[3], dz[3], isb[3];
  int r0, r1, c0, c1, image;
  unsigned low;
};

__device__ __forceinline__ void decode_work(const RasterizeFwdParams& p, int64_t w, int& n, int64_t& t) {
  if (p.instanced) {
    n = int(w / p.num_triangles);
    t = w - (int64_t)n * p.num_triangles;
  } else {
    // Last image whose exclusive prefix is <= w (images without triangles are skipped over).
    int lo = 0, hi = p.num_images - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) >> 1;
      if (p.range_info[mid] <= w) lo = mid; else hi = mid - 1;
    }
    n = lo;
    t = p.range_info[p.num_images + 1 + n] + (w - p.range_info[n]);
  }
}

// Culls and bins triangle instances w_begin..w_end-1. kWarpPerTriangle: every lane of a warp sets
// up the same instance (small jobs); otherwise each lane its own and the warp walks them in turn.
// Every branch around the warp-wide calls is uniform across the warp.
template <bool kWarpPerTriangle>
__global__ void __launch_bounds__(kBlock, 4) setup_kernel(RasterizeFwdParams p, Scratch s, int64_t w_begin,
                                                       int64_t w_end) {
  __shared__ WalkItem items[kWarpPerTriangle ? 1 : kBlock];
  const int W = p.width, H = p.height;
  const int lane = threadIdx.x & 31;
  const int64_t per_warp = kWarpPerTriangle ? 1 : 32;
  const int64_t warp_id = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  FragCtx f;
  f.W = W;
  f.prev = p.prev_rast;
  f.depth = s.depth;
  f.filter = use_filter(p);
  for (int64_t base = w_begin + warp_id * per_warp; base < w_end; base += warps * per_warp) {
    const int64_t w = kWarpPerTriangle ? base : base + lane;
    int n = 0;
    int64_t t = 0;
    float4 a, b, c;
    PixelBox bx;
    bool live = false;
    if (w < w_end) {
      decode_work(p, w, n, t);
      if (load_triangle(p.pos, p.tri, p.num_vertices, p.instanced, n, t, a, b, c)) {
        bx = pixel_box(a, b, c, W, H);
        live = bx.c0 <= bx.c1 && bx.r0 <= bx.r1;
      }
    }
    const bool big = live && (bx.r1 - bx.r0 + 1 > kQueueRows ||
                              (int64_t)(bx.c1 - bx.c0 + 1) * (bx.r1 - bx.r0 + 1) > kQueueArea);
    bool queued = enqueue_warp(s, big && (!kWarpPerTriangle || lane == 0), n, t, bx, lane) && big;
    if (kWarpPerTriangle) queued = __shfl_sync(kFullMask, queued, 0);
    TriSetup ts;
    const bool walk = live && !queued && make_setup(a, b, c, ts);
    if (kWarpPerTriangle) {
      if (walk) {
        double isb[3];
        span_recips(ts, W, isb);
        f.low = ~(unsigned)t;
        f.img_base = (int64_t)n * H * W;
        warp_walk(f, ts, isb, s.xs, s.ys, bx.r0, bx.r1, bx.c0, bx.c1, lane);
      }
    } else {
      WalkItem* mine = &items[threadIdx.x];
      if (walk) {
        double isb[3];
        span_recips(ts, W, isb);
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          mine->sa[k] = ts.sa[k];
          mine->sb[k] = ts.sb[k];
          mine->sc[k] = ts.sc[k];
          mine->isb[k] = isb[k];
        }
        mine->dz[0] = ts.dz0;
        mine->dz[1] = ts.dz1;
        mine->dz[2] = ts.dz2;
        mine->r0 = bx.r0;
        mine->r1 = bx.r1;
        mine->c0 = bx.c0;
        mine->c1 = bx.c1;
        mine->image = n;
        mine->low = ~(unsigned)t;
      }
      __syncwarp();
      unsigned m = __ballot_sync(kFullMask, walk);
      const WalkItem* warp_items = &items[threadIdx.x & ~31];
      while (m) {
        const WalkItem& it = warp_items[__ffs(m) - 1];
        m &= m - 1;
        TriSetup ws;
        double isb[3];
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          ws.sa[k] = it.sa[k];
          ws.sb[k] = it.sb[k];
          ws.sc[k] = it.sc[k];
          ws.tie[k] = ws.sb[k] > 0.0 || (ws.sb[k] == 0.0 && ws.sc[k] > 0.0);
          isb[k] = it.isb[k];
        }
        ws.dz0 = it.dz[0];
        ws.dz1 = it.dz[1];
        ws.dz2 = it.dz[2];
        f.low = it.low;
        f.img_base = (int64_t)it.image * H * W;
        warp_walk(f, ws, isb, s.xs, s.ys, it.r0, it.r1, it.c0, it.c1, lane);
      }
      __syncwarp();
    }
  }
}

// Queued triangles: warps take up to kBandsPerGrab consecutive bands (of kBandRows rows) at a time
// from a global cursor (fewer when there is little work, so that it spreads over all warps); one
// binary search finds the first band's triangle, the following bands advance linearly, and the
// triangle's setup is reused while the bands stay on it. The warp walks each band together.
constexpr int kBandsPerGrab = 8;

__global__ void __launch_bounds__(kBlock, 4) big_kernel(RasterizeFwdParams p, Scratch s) {
  const int W = p.width, H = p.height;
  const int lane = threadIdx.x & 31;
  const u64 packed = s.counters->packed;
  const u64 total = packed & kBandMask;
  if (total == 0) return;
  const u64 req = packed >> kEntryShift;
  const int64_t n_entries = (int64_t)(req < (u64)s.capacity ? req : (u64)s.capacity);
  const u64 warps = (u64)gridDim.x * (blockDim.x / 32);
  u64 grab = total / (2 * warps);
  grab = grab < 1 ? 1 : (grab > (u64)kBandsPerGrab ? (u64)kBandsPerGrab : grab);
  FragCtx f;
  f.W = W;
  f.prev = p.prev_rast;
  f.depth = s.depth;
  f.filter = use_filter(p);
  for (;;) {
    u64 t0 = 0;
    if (lane == 0) t0 = atomicAdd(&s.counters->cursor, grab);
    t0 = __shfl_sync(kFullMask, t0, 0);
    if (t0 >= total) break;
    int64_t e = 0, hi = n_entries - 1;  // last entry whose first band is <= t0
    while (e < hi) {
      const int64_t mid = (e + hi + 1) >> 1;
      if (s.band_start[mid] <= t0) e = mid; else hi = mid - 1;
    }
    int64_t have = -1;  // entry whose setup ts holds
    bool ok = false;
    TriSetup ts;
    double isb[3];
    for (u64 t = t0; t < t0 + grab && t < total; ++t) {
      while (e + 1 < n_entries && s.band_start[e + 1] <= t) ++e;
      const BigEntry en = s.entries[e];
      const u64 band = t - s.band_start[e];
      if (band > (u64)((en.r1 - en.r0) / kBandRows)) continue;
      if (e != have) {
        have = e;
        float4 a, b, c;
        load_triangle(p.pos, p.tri, p.num_vertices, p.instanced, en.image, en.tri, a, b, c);  // checked when queued
        ok = make_setup(a, b, c, ts);
        if (ok) span_recips(ts, W, isb);
        f.low = ~(unsigned)en.tri;
        f.img_base = (int64_t)en.image * H * W;
      }
      if (!ok) continue;
      const int rb = en.r0 + int(band) * kBandRows;
      warp_walk(f, ts, isb, s.xs, s.ys, rb, min(rb + kBandRows - 1, en.r1), en.c0, en.c1, lane);
    }
  }
}

__device__ __forceinline__ float finite_or_zero(double x) { return fabs(x) <= DBL_MAX ? float(x) : 0.0f; }

__global__ void __launch_bounds__(kBlock, 4) resolve_kernel(RasterizeFwdParams p, Scratch s) {
  const int W = p.width, H = p.height;
  const int64_t hw = (int64_t)H * W;
  const int64_t pixels = hw * p.num_images;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  float4* rast = reinterpret_cast<float4*>(p.rast);
  float4* db = reinterpret_cast<float4*>(p.rast_db);
  const double kx = 2.0 / W, ky = 2.0 / H;
  const bool small_index = pixels <= 0x7fffffff;
  for (int64_t pix = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; pix < pixels; pix += stride) {
    const u64 key = s.depth[pix];
    if (key == kEmpty) {
      rast[pix] = make_float4(0.f, 0.f, 0.f, 0.f);
      db[pix] = make_float4(0.f, 0.f, 0.f, 0.f);
      continue;
    }
    const int64_t t = (int64_t)(~(unsigned)(key & 0xffffffffull));
    int n, r, c;
    if (small_index) {  // 32-bit divisions are several times cheaper than 64-bit ones
      const unsigned pu = (unsigned)pix, hwu = (unsigned)hw, wu = (unsigned)W;
      const unsigned nu = pu / hwu, rem = pu - nu * hwu, ru = rem / wu;
      n = int(nu);
      r = int(ru);
      c = int(rem - ru * wu);
    } else {
      n = int(pix / hw);
      const int64_t rem = pix - (int64_t)n * hw;
      r = int(rem / W);
      c = int(rem - (int64_t)r * W);
    }
    const int* tp = p.tri + t * 3;
    const float4* vb = reinterpret_cast<const float4*>(p.pos) + (p.instanced ? (int64_t)n * p.num_vertices : 0);
    TriSetup ts;
    make_setup(vb[tp[0]], vb[tp[1]], vb[tp[2]], ts);  // succeeded when the fragment was written
    const double X = s.xs[c], Y = s.ys[r];
    double A[3];
#pragma unroll
    for (int k = 0; k < 3; ++k) A[k] = DADD(DADD(ts.a[k], DMUL(ts.b[k], X)), DMUL(ts.c[k], Y));
    const double S = DADD(DADD(A[0], A[1]), A[2]);
    // One reciprocal instead of six divisions: u, v and their derivatives are reported in
    // float32, far coarser than the ulp this costs.
    const double inv = __drcp_rn(S);
    const double u = DMUL(A[0], inv), v = DMUL(A[1], inv);
    const double sb = DADD(DADD(ts.b[0], ts.b[1]), ts.b[2]);
    const double sc = DADD(DADD(ts.c[0], ts.c[1]), ts.c[2]);
    const double dudx = DMUL(DMUL(DSUB(ts.b[0], DMUL(u, sb)), inv), kx);
    const double dudy = DMUL(DMUL(DSUB(ts.c[0], DMUL(u, sc)), inv), ky);
    const double dvdx = DMUL(DMUL(DSUB(ts.b[1], DMUL(v, sb)), inv), kx);
    const double dvdy = DMUL(DMUL(DSUB(ts.c[1], DMUL(v, sc)), inv), ky);
    const double d = fmin(fmax(plane_depth(ts, X, Y), -1.0), 1.0);
    const double uc = fmin(fmax(u, 0.0), 1.0), vc = fmin(fmax(v, 0.0), 1.0);
    const double scale = fmax(DADD(uc, vc), 1.0);
    const int64_t kid = t + 1;
    const float idf = kid <= (1 << 24) ? float(kid) : __uint_as_float(0x4A800000u + (unsigned)kid);
    const bool over = scale > 1.0;  // x / 1 == x: skip the divisions in the common case
    rast[pix] = make_float4(float(over ? DDIV(uc, scale) : uc), float(over ? DDIV(vc, scale) : vc), __fadd_rn(float(d), 0.0f), idf);
    db[pix] = make_float4(finite_or_zero(dudx), finite_or_zero(dudy), finite_or_zero(dvdx), finite_or_zero(dvdy));
  }
}

// ------------------------------------------------------------------------------------ backward

// Differentiates u = A0/S', v = A1/S' (S' = S + 1e-6 sign(S), unclamped) and, with ddb, the four
// rast_db channels w.r.t. (x, y, w) of the pixel's three vertices, in float64 (spec §4.1).
// Returns false for pixels that contribute nothing; out = (gx, gy, gw) per vertex.
__device__ __forceinline__ bool pixel_grad(const RasterizeBwdParams& p, int64_t pix, float out[9], int64_t rows[3],
                                           int64_t& key) {
  const int W = p.width, H = p.height;
  const int64_t hw = (int64_t)H * W;
  const float4 rv = reinterpret_cast<const float4*>(p.rast)[pix];
  if (!(rv.w > 0.0f)) return false;
  const int64_t kid = rv.w <= 16777216.0f ? (int64_t)rv.w : (int64_t)__float_as_uint(rv.w) - 0x4A800000ll;
  const int64_t t = kid - 1;
  if (t < 0 || t >= p.num_triangles) return false;
  const float4 g = reinterpret_cast<const float4*>(p.dy)[pix];
  double G0 = 0.0, G1 = 0.0, G2 = 0.0, G3 = 0.0;
  if (p.ddb) {
    const float4 gd = reinterpret_cast<const float4*>(p.ddb)[pix];
    G0 = gd.x;
    G1 = gd.y;
    G2 = gd.z;
    G3 = gd.w;
  }
  if (g.x == 0.f && g.y == 0.f && G0 == 0.0 && G1 == 0.0 && G2 == 0.0 && G3 == 0.0) return false;
  const int* tp = p.tri + t * 3;
  const int vi[3] = {tp[0], tp[1], tp[2]};
  if (vi[0] < 0 || vi[1] < 0 || vi[2] < 0 || vi[0] >= p.num_vertices || vi[1] >= p.num_vertices ||
      vi[2] >= p.num_vertices)
    return false;
  const int n = int(pix / hw);
  const int64_t rem = pix - (int64_t)n * hw;
  const int r = int(rem / W), c = int(rem - (int64_t)r * W);
  const int64_t row_base = p.instanced ? (int64_t)n * p.num_vertices : 0;
  const float4* vb = reinterpret_cast<const float4*>(p.pos) + row_base;
  const float4 P0 = vb[vi[0]], P1 = vb[vi[1]], P2 = vb[vi[2]];
  const double x0 = P0.x, y0 = P0.y, w0 = P0.w, x1 = P1.x, y1 = P1.y, w1 = P1.w, x2 = P2.x, y2 = P2.y, w2 = P2.w;
  const double kx = 2.0 / W, ky = 2.0 / H;
  const double X = pixel_center(c, W), Y = pixel_center(r, H);
  const double q0x = x0 - X * w0, q0y = y0 - Y * w0;
  const double q1x = x1 - X * w1, q1y = y1 - Y * w1;
  const double q2x = x2 - X * w2, q2y = y2 - Y * w2;
  const double A0 = q1x * q2y - q1y * q2x;
  const double A1 = q2x * q0y - q2y * q0x;
  const double A2 = q0x * q1y - q0y * q1x;
  const double S = A0 + A1 + A2;
  const double sS = S + (S > 0.0 ? 1e-6 : (S < 0.0 ? -1e-6 : 0.0));
  const double inv = 1.0 / sS;
  const double u = A0 * inv, v = A1 * inv;

  double gu = g.x, gv = g.y, gs = 0.0;
  double ga0 = 0.0, ga1 = 0.0, ga2 = 0.0, gb0 = 0.0, gb1 = 0.0, gb2 = 0.0;
  if (p.ddb) {
    // rast_db = (kx (a0 - u sa), ky (b0 - u sb), kx (a1 - v sa), ky (b1 - v sb)) / S' with
    // a_k = dA_k/dX and b_k = dA_k/dY (constants of the triangle).
    const double a0 = w2 * y1 - w1 * y2, a1 = w0 * y2 - w2 * y0, a2 = w1 * y0 - w0 * y1;
    const double b0 = w1 * x2 - w2 * x1, b1 = w2 * x0 - w0 * x2, b2 = w0 * x1 - w1 * x0;
    const double sa = a0 + a1 + a2, sb = b0 + b1 + b2;
    const double dudx = kx * (a0 - u * sa) * inv, dudy = ky * (b0 - u * sb) * inv;
    const double dvdx = kx * (a1 - v * sa) * inv, dvdy = ky * (b1 - v * sb) * inv;
    gu -= (kx * sa * G0 + ky * sb * G1) * inv;
    gv -= (kx * sa * G2 + ky * sb * G3) * inv;
    gs = -(G0 * dudx + G1 * dudy + G2 * dvdx + G3 * dvdy) * inv;
    const double ca = u * G0 + v * G2, cb = u * G1 + v * G3;
    ga0 = kx * inv * (G0 - ca);
    ga1 = kx * inv * (G2 - ca);
    ga2 = -kx * inv * ca;
    gb0 = ky * inv * (G1 - cb);
    gb1 = ky * inv * (G3 - cb);
    gb2 = -ky * inv * cb;
  }
  const double common = (gu * u + gv * v) * inv;
  const double gA0 = gu * inv - common + gs, gA1 = gv * inv - common + gs, gA2 = gs - common;
  // A0 = cross(q1, q2), A1 = cross(q2, q0), A2 = cross(q0, q1); d cross(a, b)/da = (b.y, -b.x),
  // d cross(a, b)/db = (-a.y, a.x).
  const double gq0x = -gA1 * q2y + gA2 * q1y, gq0y = gA1 * q2x - gA2 * q1x;
  const double gq1x = gA0 * q2y - gA2 * q0y, gq1y = -gA0 * q2x + gA2 * q0x;
  const double gq2x = -gA0 * q1y + gA1 * q0y, gq2y = gA0 * q1x - gA1 * q0x;
  double gx[3] = {gq0x, gq1x, gq2x};
  double gy[3] = {gq0y, gq1y, gq2y};
  double gw[3] = {-X * gq0x - Y * gq0y, -X * gq1x - Y * gq1y, -X * gq2x - Y * gq2y};
  if (p.ddb) {
    gy[1] += w2 * ga0; gw[2] += y1 * ga0; gy[2] -= w1 * ga0; gw[1] -= y2 * ga0;
    gy[2] += w0 * ga1; gw[0] += y2 * ga1; gy[0] -= w2 * ga1; gw[2] -= y0 * ga1;
    gy[0] += w1 * ga2; gw[1] += y0 * ga2; gy[1] -= w0 * ga2; gw[0] -= y1 * ga2;
    gx[2] += w1 * gb0; gw[1] += x2 * gb0; gx[1] -= w2 * gb0; gw[2] -= x1 * gb0;
    gx[0] += w2 * gb1; gw[2] += x0 * gb1; gx[2] -= w0 * gb1; gw[0] -= x2 * gb1;
    gx[1] += w0 * gb2; gw[0] += x1 * gb2; gx[0] -= w1 * gb2; gw[1] -= x0 * gb2;
  }
#pragma unroll
  for (int i = 0; i < 3; ++i) {
    out[3 * i + 0] = finite_or_zero(gx[i]);
    out[3 * i + 1] = finite_or_zero(gy[i]);
    out[3 * i + 2] = finite_or_zero(gw[i]);
    rows[i] = row_base + vi[i];
  }
  key = (int64_t)n * p.num_triangles + t;
  return true;
}

// Neighbouring pixels mostly share a triangle: lanes of a warp that hold the same triangle (in
// consecutive runs) sum their contributions with shuffles first, and only the first lane of each
// run issues the atomics.
__global__ void __launch_bounds__(kBlock) backward_kernel(RasterizeBwdParams p) {
  const int64_t pixels = (int64_t)p.num_images * p.height * p.width;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const int lane = threadIdx.x & 31;
  const unsigned full = 0xffffffffu;
  // The whole warp walks the same 32-pixel groups, so the shuffles below see all lanes.
  for (int64_t base = (int64_t)blockIdx.x * blockDim.x + threadIdx.x - lane; base < pixels; base += stride) {
    const int64_t pix = base + lane;
    float out[9];
    int64_t rows[3] = {-1, -1, -1};
    int64_t key = -1;
#pragma unroll
    for (int i = 0; i < 9; ++i) out[i] = 0.0f;
    const bool live = pix < pixels && pixel_grad(p, pix, out, rows, key);
    if (p.contrib_rows) {  // deterministic mode: per-pixel records, reduced by the caller
      if (pix < pixels) {
        for (int i = 0; i < 3; ++i) p.contrib_rows[pix * 3 + i] = live ? rows[i] : -1;
        for (int i = 0; i < 9; ++i) p.contrib[pix * 9 + i] = out[i];
      }
      continue;
    }
    const long long prev_key = __shfl_up_sync(full, (long long)key, 1);
    const bool start = lane == 0 || prev_key != (long long)key;
    const unsigned starts = __ballot_sync(full, start);
    const unsigned after = starts & ~((2u << lane) - 1u);
    const int seg_end = after ? __ffs(after) - 1 : 32;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
#pragma unroll
      for (int i = 0; i < 9; ++i) {
        const float o = __shfl_down_sync(full, out[i], off);
        if (lane + off < seg_end) out[i] += o;
      }
    }
    if (start && key >= 0) {
      for (int i = 0; i < 3; ++i) {
        float* gp = p.grad_pos + rows[i] * 4;
        atomicAdd(gp + 0, out[3 * i + 0]);
        atomicAdd(gp + 1, out[3 * i + 1]);
        atomicAdd(gp + 3, out[3 * i + 2]);
      }
    }
  }
}

inline int grid_for(int64_t items, int block, int64_t max_blocks) {
  int64_t g = (items + block - 1) / block;
  if (g < 1) g = 1;
  if (g > max_blocks) g = max_blocks;
  return int(g);
}

}  // namespace

int64_t rasterize_queue_capacity(int64_t total_work, int num_images, int height, int width) {
  (void)num_images;
  (void)height;
  (void)width;
  // Every triangle of a chunk may be large (dense, noisy meshes are); 24 bytes each.
  int64_t cap = total_work < kChunk ? total_work : kChunk;
  if (cap < 1) cap = 1;
  return cap;
}

size_t rasterize_scratch_bytes(int num_images, int height, int width, int64_t queue_capacity) {
  const int64_t pixels = (int64_t)num_images * height * width;
  return align_up(size_t(pixels) * sizeof(u64)) + align_up(sizeof(Counters)) +
         align_up(size_t(queue_capacity) * sizeof(BigEntry)) + align_up(size_t(queue_capacity) * sizeof(u64)) +
         align_up(size_t(width) * sizeof(double)) + align_up(size_t(height) * sizeof(double));
}

cudaError_t rasterize_fwd(const RasterizeFwdParams& p, cudaStream_t stream) {
  const int64_t pixels = (int64_t)p.num_images * p.height * p.width;
  const Scratch s = carve(p.scratch, pixels, p.queue_capacity, p.height, p.width);
  const int64_t max_blocks = (int64_t)p.num_sms * 32;
  const int64_t clear_items = pixels / 2 + (p.width > p.height ? p.width : p.height) + 1;

  clear_kernel<<<grid_for(clear_items, kBlock, max_blocks), kBlock, 0, stream>>>(s.depth, pixels, s.counters, s.xs,
                                                                                p.width, s.ys, p.height);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  for (int64_t w0 = 0; w0 < p.total_work; w0 += kChunk) {
    const int64_t w1 = (p.total_work - w0 > kChunk) ? w0 + kChunk : p.total_work;
    if (w0 > 0) {
      err = cudaMemsetAsync(s.counters, 0, sizeof(Counters), stream);
      if (err != cudaSuccess) return err;
    }
    if (p.total_work < kFewTriangles)
      setup_kernel<true><<<grid_for((w1 - w0) * 32, kBlock, int64_t(1) << 30), kBlock, 0, stream>>>(p, s, w0, w1);
    else
      setup_kernel<false><<<grid_for(w1 - w0, kBlock, int64_t(1) << 30), kBlock, 0, stream>>>(p, s, w0, w1);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    big_kernel<<<p.num_sms * 8, kBlock, 0, stream>>>(p, s);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  resolve_kernel<<<grid_for(pixels, kBlock, max_blocks), kBlock, 0, stream>>>(p, s);
  return cudaGetLastError();
}

cudaError_t rasterize_bwd(const RasterizeBwdParams& p, cudaStream_t stream) {
  int dev = 0, sms = 1;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err != cudaSuccess) return err;
  const int64_t pixels = (int64_t)p.num_images * p.height * p.width;
  backward_kernel<<<grid_for(pixels, kBlock, (int64_t)sms * 32), kBlock, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace nvdr
