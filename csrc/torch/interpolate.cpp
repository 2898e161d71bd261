// torch binding of the interpolate kernels: argument checks, allocation, device guard, current stream.
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common.h"
#include "scratch.h"
#include "kernels/interpolate.h"

namespace {

using nvdr::Scratch;

void check_tensor(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype, const at::Device& dev) {
  nvdr::check_input(t, op, name, dtype, dev, "rast");
}

struct DiffSetup {
  int64_t K = 0;
  bool identity = true;
  at::Tensor idx;   // device [K] when not identity
  at::Tensor csr;   // device [A + 1 + K] when not identity: offsets, then slot lists
};

DiffSetup make_diff(const std::optional<c10::IntArrayRef>& diff_idx, int64_t A, const at::Device& dev, bool csr) {
  DiffSetup d;
  if (!diff_idx.has_value()) return d;
  auto v = diff_idx.value();
  d.K = (int64_t)v.size();
  for (int64_t j = 0; j < d.K; ++j) {
    TORCH_CHECK(v[j] >= -1 && v[j] < A, "interpolate: diff_idx entries must be in [-1, ", A, "), got ", v[j]);
    if (v[j] != j) d.identity = false;
  }
  if (d.identity || d.K == 0) return d;
  at::Tensor cpu = at::empty({d.K}, at::TensorOptions().dtype(at::kInt));
  int* ip = cpu.data_ptr<int>();
  for (int64_t j = 0; j < d.K; ++j) ip[j] = (int)v[j];
  d.idx = cpu.to(dev);
  if (csr) {
    at::Tensor c = at::zeros({A + 1 + d.K}, at::TensorOptions().dtype(at::kInt));
    int* off = c.data_ptr<int>();
    int* js = off + A + 1;
    for (int64_t j = 0; j < d.K; ++j)
      if (v[j] >= 0) off[v[j] + 1]++;
    for (int64_t k = 0; k < A; ++k) off[k + 1] += off[k];
    std::vector<int> fill(off, off + A);
    for (int64_t j = 0; j < d.K; ++j)
      if (v[j] >= 0) js[fill[v[j]]++] = (int)j;
    d.csr = c.to(dev);
  }
  return d;
}

InterpolateParams make_params(const at::Tensor& attr, const at::Tensor& rast, const at::Tensor& tri,
                              const std::optional<at::Tensor>& rast_db, const DiffSetup& d, const char* op) {
  const at::Device dev = rast.device();
  check_tensor(rast, op, "rast", at::kFloat, dev);
  check_tensor(attr, op, "attr", at::kFloat, dev);
  check_tensor(tri, op, "tri", at::kInt, dev);
  TORCH_CHECK(rast.dim() == 4 && rast.size(3) == 4, op, "(): rast must have shape [>0, >0, >0, 4], got ", rast.sizes());
  TORCH_CHECK(tri.dim() == 2 && tri.size(1) == 3, op, "(): tri must have shape [>0, 3], got ", tri.sizes());
  TORCH_CHECK(attr.dim() == 2 || attr.dim() == 3, op, "(): attr must have shape [>0, >0, >0] or [>0, >0], got ",
              attr.sizes());
  InterpolateParams p{};
  p.N = rast.size(0);
  p.H = rast.size(1);
  p.W = rast.size(2);
  p.attr_batched = (attr.dim() == 3 && attr.size(0) > 1) ? 1 : 0;
  if (attr.dim() == 3)
    TORCH_CHECK(attr.size(0) == 1 || attr.size(0) == p.N, op,
                "(): minibatch size mismatch between inputs rast, attr (", p.N, " vs ", attr.size(0), ")");
  p.V = attr.size(attr.dim() - 2);
  p.A = attr.size(attr.dim() - 1);
  p.T = tri.size(0);
  p.attr = attr.data_ptr<float>();
  p.rast = rast.data_ptr<float>();
  p.tri = tri.data_ptr<int>();
  p.K = d.K;
  p.diff_identity = d.identity ? 1 : 0;
  p.diff_idx = d.idx.defined() ? d.idx.data_ptr<int>() : nullptr;
  p.diff_off = d.csr.defined() ? d.csr.data_ptr<int>() : nullptr;
  p.diff_js = d.csr.defined() ? d.csr.data_ptr<int>() + p.A + 1 : nullptr;
  if (d.K > 0) {
    TORCH_CHECK(rast_db.has_value(), op, "(): rast_db is required when derivatives are requested");
    const at::Tensor& db = rast_db.value();
    check_tensor(db, op, "rast_db", at::kFloat, dev);
    TORCH_CHECK(db.dim() == 4 && db.size(3) == 4, op, "(): rast_db must have shape [>0, >0, >0, 4], got ", db.sizes());
    TORCH_CHECK(db.size(0) == p.N && db.size(1) == p.H && db.size(2) == p.W, op,
                "(): spatial size mismatch between inputs rast and rast_db");
    p.rast_db = db.data_ptr<float>();
  }
  return p;
}

std::tuple<at::Tensor, at::Tensor> interpolate_fwd(const at::Tensor& attr, const at::Tensor& rast,
                                                   const at::Tensor& tri, const std::optional<at::Tensor>& rast_db,
                                                   at::OptionalIntArrayRef diff_idx) {
  c10::cuda::CUDAGuard guard(rast.device());
  const int64_t A = attr.dim() >= 2 ? attr.size(attr.dim() - 1) : 0;
  std::optional<c10::IntArrayRef> di;
  if (diff_idx.has_value()) di = *diff_idx;
  DiffSetup d = make_diff(di, A, rast.device(), false);
  InterpolateParams p = make_params(attr, rast, tri, rast_db, d, "interpolate_fwd");
  auto opts = rast.options();
  at::Tensor out = at::empty({p.N, p.H, p.W, p.A}, opts);
  at::Tensor out_da = at::empty({p.N, p.H, p.W, 2 * p.K}, opts);
  p.out = out.data_ptr<float>();
  p.out_da = p.K > 0 ? out_da.data_ptr<float>() : nullptr;
  NVDR_CUDA_CHECK(interpolate_fwd_cuda(p, nvdr::current_stream(rast)));
  return {out, out_da};
}

// Checks an incoming gradient image and records its strides: it is read in place (the gradient of
// out.sum() is an expanded tensor, whose contiguous copy would be a full image written for nothing).
const float* strided_grad(const at::Tensor& t, const char* name, const InterpolateParams& p, int64_t C,
                          const at::Device& dev, int64_t strides[4], int* contig) {
  TORCH_CHECK(t.is_cuda() && t.device() == dev, "interpolate_bwd(): ", name, " must reside on the device of rast (",
              dev, "), got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "interpolate_bwd(): ", name, " must be a float32 tensor, got ",
              c10::toString(t.scalar_type()));
  TORCH_CHECK(t.dim() == 4 && t.size(0) == p.N && t.size(1) == p.H && t.size(2) == p.W && t.size(3) == C,
              "interpolate_bwd(): ", name, " must have shape [", p.N, ", ", p.H, ", ", p.W, ", ", C, "], got ",
              t.sizes());
  for (int d = 0; d < 4; ++d) {
    TORCH_CHECK(t.stride(d) >= 0, "interpolate_bwd(): ", name, " must not have negative strides");
    strides[d] = t.stride(d);
  }
  *contig = t.is_contiguous() ? 1 : 0;
  return t.data_ptr<float>();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interpolate_bwd(
    const at::Tensor& attr, const at::Tensor& rast, const at::Tensor& tri, const at::Tensor& dy_in,
    const std::optional<at::Tensor>& rast_db, const std::optional<at::Tensor>& dda_in, at::OptionalIntArrayRef diff_idx,
    bool deterministic) {
  c10::cuda::CUDAGuard guard(rast.device());
  const int64_t A = attr.dim() >= 2 ? attr.size(attr.dim() - 1) : 0;
  std::optional<c10::IntArrayRef> di;
  if (diff_idx.has_value()) di = *diff_idx;
  DiffSetup d = make_diff(di, A, rast.device(), true);
  InterpolateParams p = make_params(attr, rast, tri, rast_db, d, "interpolate_bwd");
  p.dy = strided_grad(dy_in, "dy", p, p.A, rast.device(), p.dy_s, &p.dy_contig);
  at::Tensor dda;
  if (p.K > 0) {
    // Without dda: one zero read through all-zero strides.
    dda = dda_in.has_value() ? dda_in.value()
                             : at::zeros({1}, rast.options()).expand({p.N, p.H, p.W, 2 * p.K});
    p.dda = strided_grad(dda, "dda", p, 2 * p.K, rast.device(), p.dda_s, &p.dda_contig);
  }
  at::Tensor grad_attr = at::empty(attr.sizes(), attr.options());
  at::Tensor grad_rast = at::empty({p.N, p.H, p.W, 4}, rast.options());
  const bool want_db = diff_idx.has_value() && rast_db.has_value();
  at::Tensor grad_db = at::empty({want_db ? p.N : 0, p.H, p.W, 4}, rast.options());
  p.grad_attr = grad_attr.data_ptr<float>();
  p.grad_rast = grad_rast.data_ptr<float>();
  p.grad_rast_db = want_db ? grad_db.data_ptr<float>() : nullptr;
  TORCH_CHECK(!deterministic || p.N * p.H * p.W < (int64_t(1) << 31),
              "interpolate_bwd(): the deterministic backward handles at most 2^31-1 pixels, this call has ",
              p.N * p.H * p.W, "; turn torch.use_deterministic_algorithms off for it");
  Scratch scratch(rast.device());
  NVDR_CUDA_CHECK(interpolate_bwd_cuda(p, deterministic ? 1 : 0, scratch.handle(), nvdr::current_stream(rast)));
  return {grad_attr, grad_rast, grad_db};
}

// Shape-only implementations for tracing (torch.compile / fake tensors).
std::tuple<at::Tensor, at::Tensor> interpolate_fwd_meta(const at::Tensor& attr, const at::Tensor& rast,
                                                        const at::Tensor&, const std::optional<at::Tensor>&,
                                                        at::OptionalIntArrayRef diff_idx) {
  const int64_t K = diff_idx.has_value() ? (int64_t)diff_idx->size() : 0;
  auto opts = rast.options();
  return {at::empty({rast.size(0), rast.size(1), rast.size(2), attr.size(attr.dim() - 1)}, opts),
          at::empty({rast.size(0), rast.size(1), rast.size(2), 2 * K}, opts)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interpolate_bwd_meta(
    const at::Tensor& attr, const at::Tensor& rast, const at::Tensor&, const at::Tensor&,
    const std::optional<at::Tensor>& rast_db, const std::optional<at::Tensor>&, at::OptionalIntArrayRef diff_idx, bool) {
  const bool want_db = diff_idx.has_value() && rast_db.has_value();
  return {at::empty(attr.sizes(), attr.options()), at::empty({rast.size(0), rast.size(1), rast.size(2), 4}, rast.options()),
          at::empty({want_db ? rast.size(0) : 0, rast.size(1), rast.size(2), 4}, rast.options())};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nvdiffrast, m) {
  m.def("interpolate_fwd(Tensor attr, Tensor rast, Tensor tri, Tensor? rast_db, int[]? diff_idx) -> (Tensor, Tensor)");
  m.def(
      "interpolate_bwd(Tensor attr, Tensor rast, Tensor tri, Tensor dy, Tensor? rast_db, Tensor? dda, int[]? diff_idx, "
      "bool deterministic) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(nvdiffrast, CUDA, m) {
  m.impl("interpolate_fwd", &interpolate_fwd);
  m.impl("interpolate_bwd", &interpolate_bwd);
}

TORCH_LIBRARY_IMPL(nvdiffrast, Meta, m) {
  m.impl("interpolate_fwd", &interpolate_fwd_meta);
  m.impl("interpolate_bwd", &interpolate_bwd_meta);
}
