// Texture sampling kernels (spec §4.3 2-D, §4.4 cube maps). One thread per output pixel.
//
// The backward recomputes the footprint of every pixel, writes the uv / uv_da / bias gradients directly
// and scatters texel gradients with float atomics, or (deterministic mode) emits (texel, weight) entries
// that are sorted by texel and summed in a fixed order.
#include <math.h>

#include "cuda_compat.cuh"
#include "texture.h"

namespace {

constexpr int kBlock = 256;

// Cube faces +X, -X, +Y, -Y, +Z, -Z. Signed axis codes (1 = x, 2 = y, 3 = z): N is the face normal,
// U the direction in which s (columns) grows, V the direction in which t (rows) grows (spec §4.4 table).
__device__ __constant__ int kCubeN[6] = {1, -1, 2, -2, 3, -3};
__device__ __constant__ int kCubeU[6] = {-3, 3, 1, 1, 1, -1};
__device__ __constant__ int kCubeV[6] = {-2, -2, 3, -3, -2, -2};

__device__ __forceinline__ int face_of_axis(int code) { return 2 * (abs(code) - 1) + (code < 0 ? 1 : 0); }
__device__ __forceinline__ float sgnf(int code) { return code < 0 ? -1.f : 1.f; }

// Maps a texel one step outside face f (exactly one coordinate out of [0, S)) to the adjacent face.
__device__ __forceinline__ void cube_neighbor(int f, int i, int j, int S, int& f2, int& i2, int& j2) {
  int D, along_axis, along;
  if (j < 0) {
    D = -kCubeU[f]; along_axis = kCubeV[f]; along = i;
  } else if (j >= S) {
    D = kCubeU[f]; along_axis = kCubeV[f]; along = i;
  } else if (i < 0) {
    D = -kCubeV[f]; along_axis = kCubeU[f]; along = j;
  } else {
    D = kCubeV[f]; along_axis = kCubeU[f]; along = j;
  }
  f2 = face_of_axis(D);
  const int n = kCubeN[f], u2 = kCubeU[f2], v2 = kCubeV[f2];
  i2 = 0;
  j2 = 0;
  // The shared edge: on f2 it is where the old normal's coordinate is +-1.
  if (u2 == n) j2 = S - 1;
  else if (u2 == -n) j2 = 0;
  else if (v2 == n) i2 = S - 1;
  else if (v2 == -n) i2 = 0;
  // The coordinate along the edge keeps or reverses its direction.
  if (u2 == along_axis) j2 = along;
  else if (u2 == -along_axis) j2 = S - 1 - along;
  else if (v2 == along_axis) i2 = along;
  else if (v2 == -along_axis) i2 = S - 1 - along;
}

// Bilinear footprint at one level. Texel order: (i0,j0), (i0,j1), (i1,j0), (i1,j1).
struct Foot {
  int64_t idx[4];  // texel index within the level (x C floats), -1: a zero texel
  float w[4];      // bilinear weights
  float fx, fy;
  float sx, sy;    // dx/ds, dy/dt (0 where clamped)
  int corner;      // cube: index of the texel replaced by the average of the other three, else -1
  float cm[4];     // 1 for the corner texel, else 0 (static indexing keeps Foot in registers)
};

struct Pix {
  bool valid;
  int64_t n, bi;
  float s, t;
  // Cube projection.
  int face;
  float dx, dy, dz;  // direction
  float m, sc, tc;
  // Mip selection.
  int l0, l1;
  float f;
  bool interior;       // the level is not clamped: λ gradients flow
  bool has_jac;
  float a11, a12, a21, a22;  // base-level texel Jacobian
  // Cube: derivatives of (sc, tc, m) along X and Y.
  float dscX, dscY, dtcX, dtcY, dmX, dmY;
};

__device__ __forceinline__ float clampf(float x, float lo, float hi) { return fminf(fmaxf(x, lo), hi); }

// Component a (0, 1, 2) of (x, y, z) without a local-memory array.
__device__ __forceinline__ float pick3(float x, float y, float z, int a) { return a == 0 ? x : (a == 1 ? y : z); }
__device__ __forceinline__ void add3(int a, float v, float& x, float& y, float& z) {
  if (a == 0) x += v;
  else if (a == 1) y += v;
  else z += v;
}

// CUBE (p.boundary == NVDR_BOUNDARY_CUBE) is a template parameter: the 2-D kernels then carry none of the
// cube-map code, which keeps their register count (and so their occupancy) down.
template <bool CUBE>
__device__ __forceinline__ Pix setup_pixel(const TextureParams& p, int64_t pix) {
  Pix q;
  q.valid = true;
  q.n = nvdr_image_of(pix, p.h * p.w, p.N * p.h * p.w);
  q.bi = p.tex_batch == 1 ? 0 : q.n;
  q.face = 0;
  q.l0 = q.l1 = 0;
  q.f = 0.f;
  q.interior = false;
  q.has_jac = false;
  q.a11 = q.a12 = q.a21 = q.a22 = 0.f;
  q.dscX = q.dscY = q.dtcX = q.dtcY = q.dmX = q.dmY = 0.f;
  q.m = 1.f;
  q.sc = q.tc = 0.f;
  q.dx = q.dy = q.dz = 0.f;
  const bool cube = CUBE;
  if (!cube) {
    float2 st = reinterpret_cast<const float2*>(p.uv)[pix];
    q.s = st.x;
    q.t = st.y;
    if (!isfinite(q.s) || !isfinite(q.t)) {
      q.valid = false;
      return q;
    }
    if (p.boundary == NVDR_BOUNDARY_WRAP) {
      q.s -= floorf(q.s);
      q.t -= floorf(q.t);
    }
  } else {
    const float* d = p.uv + pix * 3;
    q.dx = d[0];
    q.dy = d[1];
    q.dz = d[2];
    const float ax = fabsf(q.dx), ay = fabsf(q.dy), az = fabsf(q.dz);
    int axis;
    if (az > fmaxf(ax, ay)) axis = 2;
    else if (ay > ax) axis = 1;
    else axis = 0;
    q.face = 2 * axis + (pick3(q.dx, q.dy, q.dz, axis) < 0.f ? 1 : 0);
    const int cu = kCubeU[q.face], cv = kCubeV[q.face];
    q.m = fabsf(pick3(q.dx, q.dy, q.dz, axis));
    q.sc = sgnf(cu) * pick3(q.dx, q.dy, q.dz, abs(cu) - 1);
    q.tc = sgnf(cv) * pick3(q.dx, q.dy, q.dz, abs(cv) - 1);
    q.s = 0.5f + 0.5f * q.sc / q.m;
    q.t = 0.5f + 0.5f * q.tc / q.m;
    if (!isfinite(q.s) || !isfinite(q.t)) {
      q.valid = false;
      return q;
    }
    q.s = clampf(q.s, 0.f, 1.f);
    q.t = clampf(q.t, 0.f, 1.f);
  }
  if (p.filter >= NVDR_FILTER_LINEAR_MIP_NEAREST) {
    float lambda = 0.f;
    if (p.uv_da) {
      q.has_jac = true;
      if (!cube) {
        float4 da = reinterpret_cast<const float4*>(p.uv_da)[pix];
        const float W0 = (float)p.level_w[0], H0 = (float)p.level_h[0];
        q.a11 = W0 * da.x;
        q.a12 = W0 * da.y;
        q.a21 = H0 * da.z;
        q.a22 = H0 * da.w;
      } else {
        const float* dd = p.uv_da + pix * 6;  // d(x,y,z)/d(X,Y)
        const int cu = kCubeU[q.face], cv = kCubeV[q.face], cn = abs(kCubeN[q.face]) - 1;
        const float su = sgnf(cu), sv = sgnf(cv), sm = pick3(q.dx, q.dy, q.dz, cn) < 0.f ? -1.f : 1.f;
        q.dscX = su * dd[2 * (abs(cu) - 1)];
        q.dscY = su * dd[2 * (abs(cu) - 1) + 1];
        q.dtcX = sv * dd[2 * (abs(cv) - 1)];
        q.dtcY = sv * dd[2 * (abs(cv) - 1) + 1];
        q.dmX = sm * dd[2 * cn];
        q.dmY = sm * dd[2 * cn + 1];
        const float S0 = (float)p.level_w[0];
        const float im = 1.f / q.m, im2 = im * im;
        q.a11 = S0 * 0.5f * (q.dscX * im - q.sc * q.dmX * im2);
        q.a12 = S0 * 0.5f * (q.dscY * im - q.sc * q.dmY * im2);
        q.a21 = S0 * 0.5f * (q.dtcX * im - q.tc * q.dmX * im2);
        q.a22 = S0 * 0.5f * (q.dtcY * im - q.tc * q.dmY * im2);
      }
      const float A = q.a11 * q.a11 + q.a21 * q.a21, B = q.a12 * q.a12 + q.a22 * q.a22;
      const float Cc = q.a11 * q.a12 + q.a21 * q.a22;
      const float h = 0.5f * (A - B);
      const float sig2 = 0.5f * (A + B) + sqrtf(h * h + Cc * Cc);
      lambda = 0.5f * log2f(sig2);
    }
    if (p.bias) lambda += p.bias[pix];
    const float Lmax = (float)(p.num_levels - 1);
    q.interior = lambda > 0.f && lambda < Lmax;
    const float lc = lambda > 0.f ? fminf(lambda, Lmax) : 0.f;  // NaN → 0
    q.l0 = (int)floorf(lc);
    if (q.l0 > p.num_levels - 1) q.l0 = p.num_levels - 1;
    if (p.filter == NVDR_FILTER_LINEAR_MIP_LINEAR) {
      q.f = lc - (float)q.l0;
      q.l1 = q.l0 + 1 < p.num_levels ? q.l0 + 1 : q.l0;
    } else {
      q.l1 = q.l0;
      q.interior = false;
    }
  }
  return q;
}

// j in [-size, 2 size): the footprint clamps coordinates to [-1, size], so one step of wrapping is
// enough (an integer modulo costs tens of instructions per texel).
__device__ __forceinline__ int wrap_index(int j, int size) {
  return j < 0 ? j + size : (j >= size ? j - size : j);
}

template <bool CUBE>
__device__ __forceinline__ Foot footprint(const TextureParams& p, const Pix& q, int level) {
  Foot ft;
  ft.corner = -1;
  ft.cm[0] = ft.cm[1] = ft.cm[2] = ft.cm[3] = 0.f;
  const int Wl = p.level_w[level], Hl = p.level_h[level];
  float x = q.s * (float)Wl - 0.5f, y = q.t * (float)Hl - 0.5f;
  ft.sx = (float)Wl;
  ft.sy = (float)Hl;
  if (!CUBE && p.boundary == NVDR_BOUNDARY_CLAMP) {
    if (x < 0.f || x > (float)(Wl - 1)) ft.sx = 0.f;
    if (y < 0.f || y > (float)(Hl - 1)) ft.sy = 0.f;
    x = clampf(x, 0.f, (float)(Wl - 1));
    y = clampf(y, 0.f, (float)(Hl - 1));
  } else if (!CUBE && p.boundary == NVDR_BOUNDARY_ZERO) {
    // Far outside every texel is zero; bound the value so that the integer conversion is safe.
    x = clampf(x, -2.f, (float)Wl + 1.f);
    y = clampf(y, -2.f, (float)Hl + 1.f);
  } else if (CUBE) {
    x = clampf(x, -0.5f, (float)Wl - 0.5f);
    y = clampf(y, -0.5f, (float)Hl - 0.5f);
  } else {
    x = clampf(x, -1.f, (float)Wl);
    y = clampf(y, -1.f, (float)Hl);
  }
  const float xf = floorf(x), yf = floorf(y);
  ft.fx = x - xf;
  ft.fy = y - yf;
  const int j0 = (int)xf, i0 = (int)yf;
  ft.w[0] = (1.f - ft.fx) * (1.f - ft.fy);
  ft.w[1] = ft.fx * (1.f - ft.fy);
  ft.w[2] = (1.f - ft.fx) * ft.fy;
  ft.w[3] = ft.fx * ft.fy;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    int i = i0 + (k >> 1), j = j0 + (k & 1);
    if (!CUBE && p.boundary == NVDR_BOUNDARY_WRAP) {
      i = wrap_index(i, Hl);
      j = wrap_index(j, Wl);
    } else if (!CUBE && p.boundary == NVDR_BOUNDARY_CLAMP) {
      i = min(max(i, 0), Hl - 1);
      j = min(max(j, 0), Wl - 1);
    } else if (!CUBE && p.boundary == NVDR_BOUNDARY_ZERO) {
      if (i < 0 || i >= Hl || j < 0 || j >= Wl) {
        ft.idx[k] = -1;
        continue;
      }
    } else if (CUBE) {
      const int S = Wl;
      const bool iout = i < 0 || i >= S, jout = j < 0 || j >= S;
      int f = q.face;
      if (iout && jout) {
        ft.corner = k;
        ft.cm[k] = 1.f;
        ft.idx[k] = -1;
        continue;
      }
      if (iout || jout) {
        int f2, i2, j2;
        cube_neighbor(f, i, j, S, f2, i2, j2);
        f = f2;
        i = i2;
        j = j2;
      }
      ft.idx[k] = ((q.bi * 6 + f) * (int64_t)S + i) * S + j;
      continue;
    }
    ft.idx[k] = (q.bi * (int64_t)Hl + i) * Wl + j;
  }
  return ft;
}

template <bool CUBE>
__device__ __forceinline__ Foot footprint_nearest(const TextureParams& p, const Pix& q) {
  Foot ft;
  ft.corner = -1;
  ft.cm[0] = ft.cm[1] = ft.cm[2] = ft.cm[3] = 0.f;
  ft.fx = ft.fy = 0.f;
  ft.sx = ft.sy = 0.f;
  ft.w[0] = 1.f;
  ft.w[1] = ft.w[2] = ft.w[3] = 0.f;
  ft.idx[1] = ft.idx[2] = ft.idx[3] = -1;
  const int Wl = p.level_w[0], Hl = p.level_h[0];
  const float xs = q.s * (float)Wl, ys = q.t * (float)Hl;
  if (p.boundary == NVDR_BOUNDARY_ZERO && !(xs >= 0.f && xs < (float)Wl && ys >= 0.f && ys < (float)Hl)) {
    ft.idx[0] = -1;
    ft.w[0] = 0.f;
    return ft;
  }
  const int j = (int)floorf(clampf(xs, 0.f, (float)(Wl - 1)));
  const int i = (int)floorf(clampf(ys, 0.f, (float)(Hl - 1)));
  if (CUBE)
    ft.idx[0] = ((q.bi * 6 + q.face) * (int64_t)Wl + i) * Wl + j;
  else
    ft.idx[0] = (q.bi * (int64_t)Hl + i) * Wl + j;
  return ft;
}

// Texel values of one channel (zero texels read as 0; the cube corner is the mean of the other three).
__device__ __forceinline__ void fetch4(const float* tex, const Foot& ft, int64_t C, int64_t c, float T[4]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) T[k] = ft.idx[k] >= 0 ? __ldg(tex + ft.idx[k] * C + c) : 0.f;
  if (ft.corner >= 0) {
    const float avg = (T[0] + T[1] + T[2] + T[3]) * (1.f / 3.f);  // the corner itself reads 0
#pragma unroll
    for (int k = 0; k < 4; ++k) T[k] += ft.cm[k] * avg;
  }
}

__device__ __forceinline__ float blend(const Foot& ft, const float T[4]) {
  return ft.w[0] * T[0] + ft.w[1] * T[1] + ft.w[2] * T[2] + ft.w[3] * T[3];
}

// Weights with which the stored texels receive gradient (the cube corner's share is split over the others).
__device__ __forceinline__ void grad_weights(const Foot& ft, float gw[4]) {
  const float share =
      (ft.cm[0] * ft.w[0] + ft.cm[1] * ft.w[1] + ft.cm[2] * ft.w[2] + ft.cm[3] * ft.w[3]) * (1.f / 3.f);
#pragma unroll
  for (int k = 0; k < 4; ++k) gw[k] = (1.f - ft.cm[k]) * (ft.w[k] + share);
}

template <bool CUBE>
__global__ void texture_fwd_kernel(const NVDR_GRID_CONSTANT TextureParams p) {
  const int64_t total = p.N * p.h * p.w;
  const int64_t C = p.C;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    float* o = p.out + pix * C;
    const Pix q = setup_pixel<CUBE>(p, pix);
    if (!q.valid) {
      for (int64_t c = 0; c < C; ++c) o[c] = 0.f;
      continue;
    }
    if (p.filter == NVDR_FILTER_NEAREST) {
      const Foot ft = footprint_nearest<CUBE>(p, q);
      const float* tex = p.levels[0];
      for (int64_t c = 0; c < C; ++c) o[c] = ft.idx[0] >= 0 ? __ldg(tex + ft.idx[0] * C + c) : 0.f;
      continue;
    }
    const Foot f0 = footprint<CUBE>(p, q, q.l0);
    const bool two = q.f > 0.f;
    Foot f1 = f0;
    if (two) f1 = footprint<CUBE>(p, q, q.l1);
    const float* t0 = p.levels[q.l0];
    const float* t1 = p.levels[q.l1];
    for (int64_t c = 0; c < C; ++c) {
      float T[4];
      fetch4(t0, f0, C, c, T);
      float v = blend(f0, T);
      if (two) {
        fetch4(t1, f1, C, c, T);
        v = (1.f - q.f) * v + q.f * blend(f1, T);
      }
      o[c] = v;
    }
  }
}

// Gradient of λ = ½·log2(σ_max²) w.r.t. the Jacobian entries (non-finite → 0).
__device__ __forceinline__ void lambda_grad_jac(const Pix& q, float glam, float& g11, float& g12, float& g21, float& g22) {
  const float A = q.a11 * q.a11 + q.a21 * q.a21, B = q.a12 * q.a12 + q.a22 * q.a22;
  const float Cc = q.a11 * q.a12 + q.a21 * q.a22;
  const float h = 0.5f * (A - B);
  const float r = sqrtf(h * h + Cc * Cc);
  const float sig2 = 0.5f * (A + B) + r;
  const float gs = glam * 0.5f / (sig2 * 0.69314718055994531f);
  const float hr = r > 0.f ? h / r : 0.f;
  const float cr = r > 0.f ? Cc / r : 0.f;
  const float gA = gs * (0.5f + 0.5f * hr), gB = gs * (0.5f - 0.5f * hr), gC = gs * cr;
  g11 = gA * 2.f * q.a11 + gC * q.a12;
  g12 = gB * 2.f * q.a12 + gC * q.a11;
  g21 = gA * 2.f * q.a21 + gC * q.a22;
  g22 = gB * 2.f * q.a22 + gC * q.a21;
  if (!isfinite(g11) || !isfinite(g12) || !isfinite(g21) || !isfinite(g22)) g11 = g12 = g21 = g22 = 0.f;
}

__device__ __forceinline__ float finite_or_zero(float x) { return isfinite(x) ? x : 0.f; }

// dy of pixel `pix` (channel c at [c * dy_sc]); strided dy is read in place.
__device__ __forceinline__ const float* dy_at(const TextureParams& p, int64_t pix) {
  if (p.dy_contig) return p.dy + pix * p.C;
  if ((p.dy_sn | p.dy_sh | p.dy_sw) == 0) return p.dy;
  const int64_t x = pix % p.w, t = pix / p.w;
  const int64_t y = t % p.h, n = t / p.h;
  return p.dy + n * p.dy_sn + y * p.dy_sh + x * p.dy_sw;
}

// Everything the backward needs about one pixel.
struct PixBwd {
  Pix q;
  Foot f0, f1;
  bool two;      // both levels carry weight
  bool need_v1;  // the second level is needed for the λ gradient
  float w0, w1;  // level weights
};

template <bool CUBE>
__device__ __forceinline__ PixBwd prepare_bwd(const TextureParams& p, int64_t pix) {
  PixBwd b;
  b.q = setup_pixel<CUBE>(p, pix);
  b.two = b.need_v1 = false;
  b.w0 = 1.f;
  b.w1 = 0.f;
  if (b.q.valid) {
    if (p.filter == NVDR_FILTER_NEAREST) {
      b.f0 = footprint_nearest<CUBE>(p, b.q);
    } else {
      b.f0 = footprint<CUBE>(p, b.q, b.q.l0);
      b.two = b.q.f > 0.f;
      b.need_v1 = b.q.interior && b.q.l1 != b.q.l0;
      if (b.two || b.need_v1) b.f1 = footprint<CUBE>(p, b.q, b.q.l1);
      b.w0 = 1.f - b.q.f;
      b.w1 = b.q.f;
    }
  }
  return b;
}

// Calls emit(level, foot, k, weight) for every texel that receives weight·dy.
template <class Emit>
__device__ __forceinline__ void for_each_texel(const PixBwd& b, Emit&& emit) {
  if (!b.q.valid) return;
  float gw[4];
  grad_weights(b.f0, gw);
  for (int k = 0; k < 4; ++k) {
    const float a = gw[k] * b.w0;
    if (b.f0.idx[k] >= 0 && a != 0.f) emit(b.q.l0, b.f0, k, a);
  }
  if (b.two) {
    grad_weights(b.f1, gw);
    for (int k = 0; k < 4; ++k) {
      const float a = gw[k] * b.w1;
      if (b.f1.idx[k] >= 0 && a != 0.f) emit(b.q.l1, b.f1, k, a);
    }
  }
}

// Writes the uv, uv_da and bias gradients of one pixel.
template <bool CUBE>
__device__ __forceinline__ void write_param_grads(const TextureParams& p, int64_t pix, const PixBwd& b) {
  const int64_t C = p.C;
  const bool cube = CUBE;
  const int uvc = cube ? 3 : 2;
  const Pix& q = b.q;
  const Foot& f0 = b.f0;
  const Foot& f1 = b.f1;
  const float* g = dy_at(p, pix);
  const int64_t sc = p.dy_contig ? 1 : p.dy_sc;
  float gs = 0.f, gt = 0.f, glam = 0.f;
  if (q.valid && p.filter != NVDR_FILTER_NEAREST) {
    const float* t0 = p.levels[q.l0];
    const float* t1 = p.levels[q.l1];
    for (int64_t c = 0; c < C; ++c) {
      const float gc = g[c * sc];
      if (gc == 0.f) continue;
      float T[4];
      fetch4(t0, f0, C, c, T);
      const float v0 = blend(f0, T);
      gs += gc * b.w0 * f0.sx * ((1.f - f0.fy) * (T[1] - T[0]) + f0.fy * (T[3] - T[2]));
      gt += gc * b.w0 * f0.sy * ((1.f - f0.fx) * (T[2] - T[0]) + f0.fx * (T[3] - T[1]));
      if (b.two || b.need_v1) {
        fetch4(t1, f1, C, c, T);
        const float v1 = blend(f1, T);
        if (b.two) {
          gs += gc * b.w1 * f1.sx * ((1.f - f1.fy) * (T[1] - T[0]) + f1.fy * (T[3] - T[2]));
          gt += gc * b.w1 * f1.sy * ((1.f - f1.fx) * (T[2] - T[0]) + f1.fx * (T[3] - T[1]));
        }
        if (q.interior) glam += gc * (v1 - v0);
      }
    }
  }
  if (!q.interior) glam = 0.f;
  if (p.grad_uv) {
    float* gu = p.grad_uv + pix * uvc;
    if (!cube) {
      gu[0] = finite_or_zero(gs);
      gu[1] = finite_or_zero(gt);
    } else {
      float gd0 = 0.f, gd1 = 0.f, gd2 = 0.f;
      float ga0 = 0.f, ga1 = 0.f, ga2 = 0.f, ga3 = 0.f, ga4 = 0.f, ga5 = 0.f;
      if (q.valid) {
        const float im = 1.f / q.m, im2 = im * im, im3 = im2 * im;
        // s = ½ + ½ sc/m, t = ½ + ½ tc/m (the [0,1] clamp only acts on rounding noise).
        float g_sc = 0.5f * gs * im, g_tc = 0.5f * gt * im;
        float g_m = -0.5f * (gs * q.sc + gt * q.tc) * im2;
        float g_dscX = 0.f, g_dscY = 0.f, g_dtcX = 0.f, g_dtcY = 0.f, g_dmX = 0.f, g_dmY = 0.f;
        if (q.has_jac && glam != 0.f) {
          float g11, g12, g21, g22;
          lambda_grad_jac(q, glam, g11, g12, g21, g22);
          const float S0 = (float)p.level_w[0];
          // a11 = S0·½(dscX/m − sc·dmX/m²), etc.
          const float h11 = S0 * 0.5f * g11, h12 = S0 * 0.5f * g12, h21 = S0 * 0.5f * g21, h22 = S0 * 0.5f * g22;
          g_dscX += h11 * im;
          g_dscY += h12 * im;
          g_dtcX += h21 * im;
          g_dtcY += h22 * im;
          g_dmX += -(h11 * q.sc + h21 * q.tc) * im2;
          g_dmY += -(h12 * q.sc + h22 * q.tc) * im2;
          g_sc += -(h11 * q.dmX + h12 * q.dmY) * im2;
          g_tc += -(h21 * q.dmX + h22 * q.dmY) * im2;
          g_m += -(h11 * q.dscX + h12 * q.dscY + h21 * q.dtcX + h22 * q.dtcY) * im2 +
                 2.f * (h11 * q.sc * q.dmX + h12 * q.sc * q.dmY + h21 * q.tc * q.dmX + h22 * q.tc * q.dmY) * im3;
        }
        const int cu = kCubeU[q.face], cv = kCubeV[q.face], cn = abs(kCubeN[q.face]) - 1;
        const float su = sgnf(cu), sv = sgnf(cv), sm = pick3(q.dx, q.dy, q.dz, cn) < 0.f ? -1.f : 1.f;
        add3(abs(cu) - 1, su * g_sc, gd0, gd1, gd2);
        add3(abs(cv) - 1, sv * g_tc, gd0, gd1, gd2);
        add3(cn, sm * g_m, gd0, gd1, gd2);
        add3(abs(cu) - 1, su * g_dscX, ga0, ga2, ga4);
        add3(abs(cu) - 1, su * g_dscY, ga1, ga3, ga5);
        add3(abs(cv) - 1, sv * g_dtcX, ga0, ga2, ga4);
        add3(abs(cv) - 1, sv * g_dtcY, ga1, ga3, ga5);
        add3(cn, sm * g_dmX, ga0, ga2, ga4);
        add3(cn, sm * g_dmY, ga1, ga3, ga5);
      }
      gu[0] = finite_or_zero(gd0);
      gu[1] = finite_or_zero(gd1);
      gu[2] = finite_or_zero(gd2);
      if (p.grad_uv_da) {
        float* ga = p.grad_uv_da + pix * 6;
        ga[0] = finite_or_zero(ga0);
        ga[1] = finite_or_zero(ga1);
        ga[2] = finite_or_zero(ga2);
        ga[3] = finite_or_zero(ga3);
        ga[4] = finite_or_zero(ga4);
        ga[5] = finite_or_zero(ga5);
      }
    }
  }
  if (!cube && p.grad_uv_da) {
    float g11 = 0.f, g12 = 0.f, g21 = 0.f, g22 = 0.f;
    if (q.valid && q.has_jac && glam != 0.f) lambda_grad_jac(q, glam, g11, g12, g21, g22);
    const float W0 = (float)p.level_w[0], H0 = (float)p.level_h[0];
    reinterpret_cast<float4*>(p.grad_uv_da)[pix] = make_float4(finite_or_zero(W0 * g11), finite_or_zero(W0 * g12),
                                                               finite_or_zero(H0 * g21), finite_or_zero(H0 * g22));
  }
  if (cube && p.grad_uv_da && !p.grad_uv) {
    float* ga = p.grad_uv_da + pix * 6;  // not reachable through the API; keeps the output defined
    for (int k = 0; k < 6; ++k) ga[k] = 0.f;
  }
  if (p.grad_bias) p.grad_bias[pix] = finite_or_zero(glam);
}

// Deterministic backward, pass 1: one thread per pixel writes its (texel, weight) entries in a fixed
// slot order and its uv / uv_da / bias gradients.
template <bool CUBE>
__global__ void texture_bwd_det_kernel(const NVDR_GRID_CONSTANT TextureParams p, uint64_t* det_keys, float* det_w,
                                       int slots) {
  const int64_t total = p.N * p.h * p.w;
  for (int64_t pix = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; pix < total;
       pix += (int64_t)gridDim.x * blockDim.x) {
    const PixBwd b = prepare_bwd<CUBE>(p, pix);
    uint64_t* kk = det_keys + pix * slots;
    float* ww = det_w + pix * slots;
    for (int k = 0; k < slots; ++k) kk[k] = NVDR_SKIP_KEY;
    int slot = 0;
    for_each_texel(b, [&](int level, const Foot& ft, int k, float a) {
      if (slot < slots) {
        kk[slot] = (uint64_t)(p.level_offset[level] + ft.idx[k]);
        ww[slot] = a;
        ++slot;
      }
    });
    write_param_grads<CUBE>(p, pix, b);
  }
}

// Non-deterministic backward. Lanes of a warp are consecutive pixels of a row, so within one footprint
// slot (level, corner) equal texels form contiguous runs of lanes. Each run is summed with shuffles and
// only its first lane issues the atomic: fewer atomics, and none that collide inside one warp
// instruction (same-address float atomics of one instruction are serialized by the memory system).
// OR of v over the warp.
__device__ __forceinline__ unsigned warp_or(unsigned v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  return __reduce_or_sync(0xffffffffu, v);
#else
  unsigned r = 0;
  for (int i = 0; i < 32; ++i)
    if (__ballot_sync(0xffffffffu, (v >> i) & 1u)) r |= 1u << i;
  return r;
#endif
}

// Run-aggregated scatter of one footprint slot: lanes holding the same key (contiguous runs, see
// above) sum v over the run and its first lane adds the sum to the texel. KEY is uint32_t for the
// compact C <= 4 path, int64_t otherwise; kNone marks lanes without a contribution.
template <class KEY>
__device__ __forceinline__ void run_heads(KEY key, KEY none, int lane, bool& head, unsigned& same, unsigned& need) {
  const unsigned full = 0xffffffffu;
  const KEY prev = __shfl_up_sync(full, key, 1);
  head = key != none && (lane == 0 || prev != key);
  // bit i of same: lane + 2^i belongs to this lane's run (no run head in between). need: the steps
  // of the segmented sum that any lane uses (runs are short, so usually one or two).
  const unsigned heads = __ballot_sync(full, lane == 0 || prev != key);
  const unsigned after = lane == 31 ? 0u : (heads >> (lane + 1));
  same = 0;
#pragma unroll
  for (int i = 0; i < 5; ++i) {
    const int d = 1 << i;
    if (lane + d < 32 && (after & ((1u << d) - 1u)) == 0u) same |= 1u << i;
  }
  need = warp_or(same);
}

__device__ __forceinline__ float run_sum(float x, unsigned same, unsigned need) {
#pragma unroll
  for (int i = 0; i < 5; ++i) {
    if (!(need & (1u << i))) break;  // uniform
    const float o = __shfl_down_sync(0xffffffffu, x, 1 << i);
    if (same & (1u << i)) x += o;
  }
  return x;
}

// Adds v[0..C) to the texel gradient at dst: one vector atomic where the buffer is padded (sm_90+).
__device__ __forceinline__ void texel_atomic_add(float* dst, const float v[4], int64_t C, int64_t stride) {
// Vector float atomics exist on sm_90 from CUDA 12.1 on; older toolkits (our cu118 builds) use scalars.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && \
    (__CUDACC_VER_MAJOR__ > 12 || (__CUDACC_VER_MAJOR__ == 12 && __CUDACC_VER_MINOR__ >= 1))
  if (stride == 4) {
    atomicAdd(reinterpret_cast<float4*>(dst), make_float4(v[0], v[1], v[2], v[3]));
    return;
  }
  if (stride == 2 && C == 2) {
    atomicAdd(reinterpret_cast<float2*>(dst), make_float2(v[0], v[1]));
    return;
  }
#endif
#pragma unroll
  for (int c = 0; c < 4; ++c)
    if (c < C && v[c] != 0.f) atomicAdd(dst + c, v[c]);
}

// PARAMS / SCATTER select the halves (uv / uv_da / bias gradients, texel gradients); without texel
// gradients wanted only the first runs. The parameter gradients are written first: the scatter then
// needs only the eight (key, weight) pairs and dy, not the whole footprint state (fewer registers live
// across it, so fewer spills). SCATTER: kScatterNone, kScatterCompact (C <= 4 and 32-bit keys, the
// host checks that every texel index fits) or kScatterGeneral.
constexpr int kScatterNone = 0, kScatterCompact = 1, kScatterGeneral = 2;

// Occupancy matters more than a few spills: four blocks per SM for the 2-D variants with texel
// gradients (register cap 64; measured faster than three on H200 for the mid, big and hires benchmark
// workloads, also after the compact scatter: 1.57 vs 1.73 ms on mid), three without (cap 85).
template <bool PARAMS, int SCATTER, bool CUBE>
__global__ void __launch_bounds__(kBlock, CUBE ? 1 : (SCATTER != kScatterNone ? 4 : 3)) texture_bwd_warp_kernel(const NVDR_GRID_CONSTANT TextureParams p) {
  const int64_t total = p.N * p.h * p.w;
  const int64_t C = p.C;
  const int lane = threadIdx.x & 31;
  const int64_t warp0 = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) - lane;
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  const unsigned full = 0xffffffffu;
  for (int64_t base = warp0; base < total; base += stride) {
    const int64_t pix = base + lane;
    const bool in = pix < total;
    PixBwd b;
    b.q.valid = false;
    b.two = false;
    b.w0 = 1.f;
    b.w1 = 0.f;
    if (in) b = prepare_bwd<CUBE>(p, pix);
    if (PARAMS && in) write_param_grads<CUBE>(p, pix, b);
    if (SCATTER == kScatterNone) continue;
    const float* g = dy_at(p, in ? pix : 0);
    const int64_t sc = p.dy_contig ? 1 : p.dy_sc;
    if (SCATTER == kScatterCompact) {
      constexpr uint32_t kNone = 0xffffffffu;
      uint32_t key[8];
      float a[8];
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        key[s] = kNone;
        a[s] = 0.f;
      }
      if (b.q.valid) {
        float gw[4];
        grad_weights(b.f0, gw);
        const uint32_t off0 = (uint32_t)p.level_offset[b.q.l0];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          a[k] = gw[k] * b.w0;
          if (b.f0.idx[k] >= 0 && a[k] != 0.f) key[k] = off0 + (uint32_t)b.f0.idx[k];
        }
        if (b.two) {
          grad_weights(b.f1, gw);
          const uint32_t off1 = (uint32_t)p.level_offset[b.q.l1];
#pragma unroll
          for (int k = 0; k < 4; ++k) {
            a[4 + k] = gw[k] * b.w1;
            if (b.f1.idx[k] >= 0 && a[4 + k] != 0.f) key[4 + k] = off1 + (uint32_t)b.f1.idx[k];
          }
        }
      }
      float gv[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) gv[c] = (b.q.valid && c < C) ? g[c * sc] : 0.f;
#pragma unroll
      for (int s = 0; s < 8; ++s) {
        if (__ballot_sync(full, key[s] != kNone) == 0) continue;
        bool head;
        unsigned same, need;
        run_heads<uint32_t>(key[s], kNone, lane, head, same, need);
        float v[4];
#pragma unroll
        for (int c = 0; c < 4; ++c) v[c] = run_sum(key[s] != kNone ? a[s] * gv[c] : 0.f, same, need);
        if (head) texel_atomic_add(p.grad_flat + (int64_t)key[s] * p.grad_stride, v, C, p.grad_stride);
      }
      continue;
    }
    float gw0[4] = {0.f, 0.f, 0.f, 0.f}, gw1[4] = {0.f, 0.f, 0.f, 0.f};
    if (b.q.valid) {
      grad_weights(b.f0, gw0);
      if (b.two) grad_weights(b.f1, gw1);
    }
    for (int s = 0; s < 8; ++s) {
      const int k = s & 3;
      int64_t key = -1;
      float a = 0.f;
      if (b.q.valid) {
        if (s < 4) {
          a = gw0[k] * b.w0;
          if (b.f0.idx[k] >= 0 && a != 0.f) key = p.level_offset[b.q.l0] + b.f0.idx[k];
        } else if (b.two) {
          a = gw1[k] * b.w1;
          if (b.f1.idx[k] >= 0 && a != 0.f) key = p.level_offset[b.q.l1] + b.f1.idx[k];
        }
      }
      if (__ballot_sync(full, key >= 0) == 0) continue;
      bool head;
      unsigned same, need;
      run_heads<long long>((long long)key, -1ll, lane, head, same, need);
      for (int64_t c = 0; c < C; ++c) {
        const float v = run_sum(key >= 0 ? a * g[c * sc] : 0.f, same, need);
        if (head && v != 0.f) atomicAdd(p.grad_flat + key * p.grad_stride + c, v);
      }
    }
  }
}

// Deterministic texel reduction: one warp per texel, lanes over channels, entries in sorted order.
__global__ void texture_det_reduce_kernel(const NVDR_GRID_CONSTANT TextureParams p, NvdrSortedSegments s, const float* det_w, int slots) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) >> 5;
  const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
  const int count = *s.seg_count;
  const int64_t C = p.C;
  for (int64_t si = warp; si < count; si += nwarps) {
    const int64_t start = s.seg_start[si];
    const int64_t end = nvdr_segment_end(s, start);
    const uint64_t key = s.keys[start];
    const int64_t sc = p.dy_contig ? 1 : p.dy_sc;
    for (int64_t c = lane; c < C; c += 32) {
      float sum = 0.f;
      for (int64_t e = start; e < end; ++e) {
        const int64_t entry = s.order[e];
        sum += det_w[entry] * dy_at(p, entry / slots)[c * sc];
      }
      p.grad_flat[key * p.grad_stride + c] = sum;
    }
  }
}

}  // namespace

cudaError_t texture_fwd_cuda(const TextureParams& p, cudaStream_t stream) {
  const int64_t total = p.N * p.h * p.w;
  if (total <= 0) return cudaSuccess;
  if (p.num_levels < 1 || p.num_levels > NVDR_MAX_MIP_LEVELS) return cudaErrorInvalidValue;
  if (p.boundary == NVDR_BOUNDARY_CUBE)
    texture_fwd_kernel<true><<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p);
  else
    texture_fwd_kernel<false><<<nvdr_grid_1d(total, kBlock), kBlock, 0, stream>>>(p);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}

cudaError_t texture_bwd_cuda(const TextureParams& p, int deterministic, const NvdrAllocator& alloc,
                             cudaStream_t stream) {
  if (p.num_levels < 1 || p.num_levels > NVDR_MAX_MIP_LEVELS) return cudaErrorInvalidValue;
  if (p.grad_stride < p.C) return cudaErrorInvalidValue;
  if (p.grad_flat)
    NVDR_RETURN_IF_ERROR(
        cudaMemsetAsync(p.grad_flat, 0, (size_t)(p.grad_texels * p.grad_stride) * sizeof(float), stream));
  const int64_t total = p.N * p.h * p.w;
  if (total <= 0) return cudaSuccess;
  const int grid = nvdr_grid_1d(total, kBlock);
  const bool cube = p.boundary == NVDR_BOUNDARY_CUBE;
  if (!p.grad_flat) {
    if (cube)
      texture_bwd_warp_kernel<true, kScatterNone, true><<<grid, kBlock, 0, stream>>>(p);
    else
      texture_bwd_warp_kernel<true, kScatterNone, false><<<grid, kBlock, 0, stream>>>(p);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    return cudaSuccess;
  }
  if (!deterministic) {
    // 32-bit keys (one value kept as "none") whenever the texel count allows.
    const bool compact = p.C <= 4 && p.grad_texels < 0xffffffffll;
    if (cube && compact)
      texture_bwd_warp_kernel<true, kScatterCompact, true><<<grid, kBlock, 0, stream>>>(p);
    else if (cube)
      texture_bwd_warp_kernel<true, kScatterGeneral, true><<<grid, kBlock, 0, stream>>>(p);
    else if (compact)
      texture_bwd_warp_kernel<true, kScatterCompact, false><<<grid, kBlock, 0, stream>>>(p);
    else
      texture_bwd_warp_kernel<true, kScatterGeneral, false><<<grid, kBlock, 0, stream>>>(p);
    NVDR_RETURN_IF_LAUNCH_ERROR();
    return cudaSuccess;
  }
  const int slots = p.filter == NVDR_FILTER_NEAREST ? 1 : (p.filter == NVDR_FILTER_LINEAR_MIP_LINEAR ? 8 : 4);
  const int64_t n = total * slots;
  uint64_t* keys = alloc.get<uint64_t>(n);
  float* w = alloc.get<float>(n);
  if (!keys || !w) return cudaErrorMemoryAllocation;
  if (cube)
    texture_bwd_det_kernel<true><<<grid, kBlock, 0, stream>>>(p, keys, w, slots);
  else
    texture_bwd_det_kernel<false><<<grid, kBlock, 0, stream>>>(p, keys, w, slots);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  NvdrSortedSegments s;
  NVDR_RETURN_IF_ERROR(
      nvdr_sort_segments(keys, n, (uint64_t)(p.grad_texels > 0 ? p.grad_texels - 1 : 0), alloc, stream, &s));
  texture_det_reduce_kernel<<<nvdr_grid_1d(n * 32, kBlock, 4096), kBlock, 0, stream>>>(p, s, w, slots);
  NVDR_RETURN_IF_LAUNCH_ERROR();
  return cudaSuccess;
}
