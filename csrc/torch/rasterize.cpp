// torch bindings of the CUDA rasterizer (csrc/kernels/rasterize.cu): argument checks, allocation
// through the caching allocator, device guard and current stream. Spec §3.3, §3.4, §4.1, §6.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/rasterize.h"
#include "common.h"

#if defined(_MSC_VER)
#define NVDR_NOINLINE __declspec(noinline)
#else
#define NVDR_NOINLINE __attribute__((noinline))
#endif

namespace {

// Error messages format numbers with std::to_string instead of the message builder's stream
// operators: a module built with -fvisibility=hidden under gcc 13 crashed in ostream number
// formatting (see setup.py); this keeps the error path independent of such build flags.
std::string num(int64_t v) { return std::to_string(v); }

std::string dims(const at::Tensor& t) {
  std::string out = "[";
  for (int64_t i = 0; i < t.dim(); ++i) out += (i ? ", " : "") + std::to_string(t.size(i));
  return out + "]";
}

constexpr int64_t kMaxSide = int64_t(1) << 20;  // keeps fixed-point coordinates in range

NVDR_NOINLINE void check_cuda_float(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, "(): Inputs ", name, " must reside on a CUDA device, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, "(): Inputs ", name, " must be float32 tensors, got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, "(): Inputs ", name, " must be contiguous tensors");
}

NVDR_NOINLINE void check_same_device(const char* op, const char* names, const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.device() == b.device(), op, "(): Inputs ", names, " must reside on the same GPU device, got ",
              a.device(), " and ", b.device());
}

// Kernels read pos / rast with 16-byte vector loads; a contiguous view at an odd storage offset is
// copied instead of failing.
at::Tensor aligned16(const at::Tensor& t) {
  return (reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0) ? t : t.clone();
}

int sm_count(int device) {
  static std::mutex mu;
  static std::vector<int> cache;
  std::lock_guard<std::mutex> lock(mu);
  if (device >= static_cast<int>(cache.size())) cache.resize(device + 1, 0);
  if (cache[device] == 0) {
    int n = 0;
    NVDR_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device] = n > 0 ? n : 1;
  }
  return cache[device];
}

struct Geometry {
  int64_t num_images = 0;
  bool instanced = true;
};

NVDR_NOINLINE Geometry check_geometry(const char* op, const at::Tensor& pos, const at::Tensor& tri,
                        const c10::optional<at::Tensor>& ranges) {
  check_cuda_float(op, "pos", pos);
  TORCH_CHECK(tri.is_cuda(), op, "(): Inputs tri must reside on a CUDA device, got ", tri.device());
  TORCH_CHECK(tri.scalar_type() == at::kInt, op, "(): Inputs tri must be int32 tensors, got ", tri.scalar_type());
  TORCH_CHECK(tri.is_contiguous(), op, "(): Inputs tri must be contiguous tensors");
  check_same_device(op, "pos, tri", pos, tri);
  TORCH_CHECK(tri.dim() == 2 && tri.size(0) > 0 && tri.size(1) == 3, "tri must have shape [>0, 3], got ",
              dims(tri));
  TORCH_CHECK(tri.size(0) < (int64_t(1) << 31), "tri has ", num(tri.size(0)), " triangles; at most 2^31 - 1 are supported");
  Geometry g;
  if (pos.dim() == 3) {
    TORCH_CHECK(pos.size(0) > 0 && pos.size(1) > 0 && pos.size(2) == 4,
                "instance mode - pos must have shape [>0, >0, 4], got ", dims(pos));
    g.instanced = true;
    g.num_images = pos.size(0);
  } else {
    TORCH_CHECK(pos.dim() == 2 && pos.size(0) > 0 && pos.size(1) == 4, "range mode - pos must have shape [>0, 4], got ",
                dims(pos));
    TORCH_CHECK(ranges.has_value() && ranges->defined(),
                "range mode - ranges must have shape [>0, 2] (ranges is required when pos is 2-D)");
    const at::Tensor& r = *ranges;
    TORCH_CHECK(r.device().is_cpu(), op, "(): Inputs ranges must reside on CPU, got ", r.device());
    TORCH_CHECK(r.scalar_type() == at::kInt, op, "(): Inputs ranges must be int32 tensors, got ", r.scalar_type());
    TORCH_CHECK(r.is_contiguous(), op, "(): Inputs ranges must be contiguous tensors");
    TORCH_CHECK(r.dim() == 2 && r.size(0) > 0 && r.size(1) == 2, "range mode - ranges must have shape [>0, 2], got ",
                dims(r));
    g.instanced = false;
    g.num_images = r.size(0);
  }
  TORCH_CHECK(g.num_images <= 65535, op, "(): at most 65535 images per call are supported, got ", num(g.num_images));
  return g;
}

// All argument checks of the forward pass.
NVDR_NOINLINE Geometry check_fwd_args(const char* op, const at::Tensor& pos, const at::Tensor& tri, int64_t height,
                                      int64_t width, const c10::optional<at::Tensor>& ranges,
                                      const c10::optional<at::Tensor>& prev_rast) {
  const Geometry g = check_geometry(op, pos, tri, ranges);
  TORCH_CHECK(height > 0 && width > 0, "resolution must be [>0, >0], got [", num(height), ", ", num(width), "]");
  TORCH_CHECK(height <= kMaxSide && width <= kMaxSide, "resolution must be at most ", num(kMaxSide), " per side, got [",
              num(height), ", ", num(width), "]");
  if (prev_rast.has_value() && prev_rast->defined()) {
    check_cuda_float(op, "prev_rast", *prev_rast);
    check_same_device(op, "pos, prev_rast", pos, *prev_rast);
    TORCH_CHECK(prev_rast->dim() == 4 && prev_rast->size(0) == g.num_images && prev_rast->size(1) == height &&
                    prev_rast->size(2) == width && prev_rast->size(3) == 4,
                "prev_rast must have shape [", num(g.num_images), ", ", num(height), ", ", num(width),
                ", 4], got ", dims(*prev_rast));
  }
  return g;
}

std::tuple<at::Tensor, at::Tensor> rasterize_fwd_cuda(const at::Tensor& pos_in, const at::Tensor& tri, int64_t height,
                                                      int64_t width, const c10::optional<at::Tensor>& ranges,
                                                      const c10::optional<at::Tensor>& prev_rast_in) {
  const Geometry g = check_fwd_args("rasterize_fwd_cuda", pos_in, tri, height, width, ranges, prev_rast_in);
  const c10::cuda::CUDAGuard guard(pos_in.device());
  const at::Tensor pos = aligned16(pos_in);
  const at::Tensor prev =
      (prev_rast_in.has_value() && prev_rast_in->defined()) ? aligned16(*prev_rast_in) : at::Tensor();

  const int64_t T = tri.size(0);
  const int64_t V = g.instanced ? pos.size(1) : pos.size(0);
  const int64_t N = g.num_images;
  nvdr::RasterizeFwdParams p;
  p.pos = pos.data_ptr<float>();
  p.tri = tri.data_ptr<int>();
  p.num_vertices = V;
  p.num_triangles = T;
  p.num_images = static_cast<int>(N);
  p.height = static_cast<int>(height);
  p.width = static_cast<int>(width);
  p.instanced = g.instanced;
  p.prev_rast = prev.defined() ? prev.data_ptr<float>() : nullptr;

  at::Tensor range_dev;
  if (g.instanced) {
    p.total_work = N * T;
  } else {
    // Clamp every (first, count) to [0, T) on the host (ranges is a CPU tensor by contract), then
    // ship the prefix sums with an asynchronous copy: no host synchronization.
    at::Tensor info = at::empty({2 * N + 1}, at::TensorOptions().dtype(at::kLong));
    int64_t* h = info.data_ptr<int64_t>();
    const int* r = ranges->data_ptr<int>();
    int64_t acc = 0;
    for (int64_t n = 0; n < N; ++n) {
      int64_t first = r[2 * n], count = r[2 * n + 1];
      int64_t end = first + (count > 0 ? count : 0);
      if (first < 0) first = 0;
      if (end > T) end = T;
      if (end < first) end = first;
      h[n] = acc;
      h[N + 1 + n] = first;
      acc += end - first;
    }
    h[N] = acc;
    p.total_work = acc;
    range_dev = info.to(pos.device(), /*non_blocking=*/true);
    p.range_info = range_dev.data_ptr<int64_t>();
  }

  const at::TensorOptions fopt = pos.options();
  at::Tensor rast = at::empty({N, height, width, 4}, fopt);
  at::Tensor rast_db = at::empty({N, height, width, 4}, fopt);
  p.rast = rast.data_ptr<float>();
  p.rast_db = rast_db.data_ptr<float>();
  p.queue_capacity = nvdr::rasterize_queue_capacity(p.total_work, p.num_images, p.height, p.width);
  const size_t bytes = nvdr::rasterize_scratch_bytes(p.num_images, p.height, p.width, p.queue_capacity);
  at::Tensor scratch = at::empty({static_cast<int64_t>(bytes)}, fopt.dtype(at::kByte));
  p.scratch = scratch.data_ptr();
  p.num_sms = sm_count(pos.device().index());
  NVDR_CUDA_CHECK(nvdr::rasterize_fwd(p, nvdr::current_stream(pos)));
  return {rast, rast_db};
}

NVDR_NOINLINE nvdr::RasterizeBwdParams bwd_params(const char* op, const at::Tensor& pos, const at::Tensor& tri, const at::Tensor& rast,
                                    const at::Tensor& dy, const c10::optional<at::Tensor>& ddb, at::Tensor& ddb_keep) {
  check_cuda_float(op, "pos", pos);
  TORCH_CHECK(tri.is_cuda() && tri.scalar_type() == at::kInt && tri.is_contiguous(), op,
              "(): Inputs tri must be a contiguous int32 CUDA tensor");
  check_cuda_float(op, "rast", rast);
  check_cuda_float(op, "dy", dy);
  check_same_device(op, "pos, tri", pos, tri);
  check_same_device(op, "pos, rast", pos, rast);
  check_same_device(op, "pos, dy", pos, dy);
  TORCH_CHECK(tri.dim() == 2 && tri.size(0) > 0 && tri.size(1) == 3, "tri must have shape [>0, 3], got ", dims(tri));
  TORCH_CHECK(rast.dim() == 4 && rast.size(0) > 0 && rast.size(1) > 0 && rast.size(2) > 0 && rast.size(3) == 4,
              "rast must have shape [>0, >0, >0, 4], got ", dims(rast));
  const bool instanced = pos.dim() == 3;
  if (instanced) {
    TORCH_CHECK(pos.size(0) == rast.size(0) && pos.size(1) > 0 && pos.size(2) == 4, "pos must have shape [",
                num(rast.size(0)), ", >0, 4], got ", dims(pos));
  } else {
    TORCH_CHECK(pos.dim() == 2 && pos.size(0) > 0 && pos.size(1) == 4, "pos must have shape [>0, 4], got ", dims(pos));
  }
  TORCH_CHECK(dy.sizes() == rast.sizes(), "dy must have shape [depth, height, width, 4] = ", dims(rast), ", got ",
              dims(dy));
  nvdr::RasterizeBwdParams p;
  if (ddb.has_value() && ddb->defined()) {
    check_cuda_float(op, "ddb", *ddb);
    check_same_device(op, "pos, ddb", pos, *ddb);
    TORCH_CHECK(ddb->sizes() == rast.sizes(), "dy_db must have shape [depth, height, width, 4] = ", dims(rast),
                ", got ", dims(*ddb));
    ddb_keep = aligned16(*ddb);
    p.ddb = ddb_keep.data_ptr<float>();
  }
  p.pos = pos.data_ptr<float>();
  p.tri = tri.data_ptr<int>();
  p.num_vertices = instanced ? pos.size(1) : pos.size(0);
  p.num_triangles = tri.size(0);
  p.num_images = static_cast<int>(rast.size(0));
  p.height = static_cast<int>(rast.size(1));
  p.width = static_cast<int>(rast.size(2));
  p.instanced = instanced;
  p.rast = rast.data_ptr<float>();
  p.dy = dy.data_ptr<float>();
  return p;
}

at::Tensor rasterize_bwd_cuda(const at::Tensor& pos_in, const at::Tensor& tri, const at::Tensor& rast_in,
                              const at::Tensor& dy_in, const c10::optional<at::Tensor>& ddb) {
  const c10::cuda::CUDAGuard guard(pos_in.device());
  const at::Tensor pos = aligned16(pos_in), rast = aligned16(rast_in), dy = aligned16(dy_in);
  at::Tensor ddb_keep;
  nvdr::RasterizeBwdParams p = bwd_params("rasterize_bwd_cuda", pos, tri, rast, dy, ddb, ddb_keep);
  at::Tensor grad = at::zeros(pos.sizes(), pos.options());
  p.grad_pos = grad.data_ptr<float>();
  NVDR_CUDA_CHECK(nvdr::rasterize_bwd(p, nvdr::current_stream(pos)));
  return grad;
}

// Per-pixel gradient contributions for the deterministic backward: ([P, 3, 3] (x, y, w) per
// vertex, [P, 3] flat gradient rows or -1). The caller reduces them with a deterministic scatter.
std::tuple<at::Tensor, at::Tensor> rasterize_bwd_contrib_cuda(const at::Tensor& pos_in, const at::Tensor& tri,
                                                              const at::Tensor& rast_in, const at::Tensor& dy_in,
                                                              const c10::optional<at::Tensor>& ddb) {
  const c10::cuda::CUDAGuard guard(pos_in.device());
  const at::Tensor pos = aligned16(pos_in), rast = aligned16(rast_in), dy = aligned16(dy_in);
  at::Tensor ddb_keep;
  nvdr::RasterizeBwdParams p = bwd_params("rasterize_bwd_contrib_cuda", pos, tri, rast, dy, ddb, ddb_keep);
  const int64_t P = rast.size(0) * rast.size(1) * rast.size(2);
  at::Tensor vals = at::empty({P, 3, 3}, pos.options());
  at::Tensor rows = at::empty({P, 3}, pos.options().dtype(at::kLong));
  p.contrib = vals.data_ptr<float>();
  p.contrib_rows = rows.data_ptr<int64_t>();
  NVDR_CUDA_CHECK(nvdr::rasterize_bwd(p, nvdr::current_stream(pos)));
  return {vals, rows};
}

// ---------------------------------------------------------------------------- meta (fake) kernels

int64_t meta_images(const at::Tensor& pos, const c10::optional<at::Tensor>& ranges) {
  if (pos.dim() == 3) return pos.size(0);
  TORCH_CHECK(ranges.has_value() && ranges->defined(), "range mode - ranges must have shape [>0, 2]");
  return ranges->size(0);
}

std::tuple<at::Tensor, at::Tensor> rasterize_fwd_meta(const at::Tensor& pos, const at::Tensor& tri, int64_t height,
                                                      int64_t width, const c10::optional<at::Tensor>& ranges,
                                                      const c10::optional<at::Tensor>& prev_rast) {
  (void)tri;
  (void)prev_rast;
  const int64_t N = meta_images(pos, ranges);
  return {at::empty({N, height, width, 4}, pos.options()), at::empty({N, height, width, 4}, pos.options())};
}

at::Tensor rasterize_bwd_meta(const at::Tensor& pos, const at::Tensor& tri, const at::Tensor& rast, const at::Tensor& dy,
                              const c10::optional<at::Tensor>& ddb) {
  (void)tri;
  (void)rast;
  (void)dy;
  (void)ddb;
  return at::empty(pos.sizes(), pos.options());
}

std::tuple<at::Tensor, at::Tensor> rasterize_bwd_contrib_meta(const at::Tensor& pos, const at::Tensor& tri,
                                                              const at::Tensor& rast, const at::Tensor& dy,
                                                              const c10::optional<at::Tensor>& ddb) {
  (void)tri;
  (void)dy;
  (void)ddb;
  const int64_t P = rast.size(0) * rast.size(1) * rast.size(2);
  return {at::empty({P, 3, 3}, pos.options()), at::empty({P, 3}, pos.options().dtype(at::kLong))};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nvdiffrast, m) {
  m.def("rasterize_fwd(Tensor pos, Tensor tri, int height, int width, Tensor? ranges, Tensor? prev_rast) -> (Tensor, Tensor)");
  m.def("rasterize_bwd(Tensor pos, Tensor tri, Tensor rast, Tensor dy, Tensor? ddb) -> Tensor");
  m.def("rasterize_bwd_contrib(Tensor pos, Tensor tri, Tensor rast, Tensor dy, Tensor? ddb) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(nvdiffrast, CUDA, m) {
  m.impl("rasterize_fwd", &rasterize_fwd_cuda);
  m.impl("rasterize_bwd", &rasterize_bwd_cuda);
  m.impl("rasterize_bwd_contrib", &rasterize_bwd_contrib_cuda);
}

TORCH_LIBRARY_IMPL(nvdiffrast, Meta, m) {
  m.impl("rasterize_fwd", &rasterize_fwd_meta);
  m.impl("rasterize_bwd", &rasterize_bwd_meta);
  m.impl("rasterize_bwd_contrib", &rasterize_bwd_contrib_meta);
}
