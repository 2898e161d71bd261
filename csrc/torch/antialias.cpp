// torch binding of the antialias kernels and the topology hash.
#include <ATen/ops/empty.h>
#include <torch/csrc/autograd/custom_function.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common.h"
#include "scratch.h"
#include "kernels/antialias.h"

namespace {

using nvdr::Scratch;

void check_tensor(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype, const at::Device& dev) {
  nvdr::check_input(t, op, name, dtype, dev, "color");
}

// The topology tensor is int64 [2 * capacity + ceil(3T / 2) + 1]: the hash slots (key, (triangle, vertex)),
// the int32 neighbour table [3T] (see antialias_build_hash_cuda), and one word of scratch for
// antialias_refresh_hash_cuda.
int64_t topology_numel(int64_t T) { return 2 * antialias_hash_capacity(T) + (3 * T + 1) / 2 + 1; }

AntialiasHash view_hash(const at::Tensor& h, int64_t T, const at::Device& dev, const char* op, int** nbr) {
  TORCH_CHECK(h.is_cuda() && h.device() == dev, op, "(): topology hash must reside on the same GPU device as color");
  TORCH_CHECK(h.scalar_type() == at::kLong && h.dim() == 1 && h.is_contiguous(), op,
              "(): topology hash must be the tensor made by antialias_topology_hash");
  TORCH_CHECK(h.numel() == topology_numel(T), op, "(): topology hash was not built for a tri with ", T,
              " triangles (size ", h.numel(), ", expected ", topology_numel(T), ")");
  TORCH_CHECK(reinterpret_cast<uintptr_t>(h.data_ptr()) % 16 == 0, op,
              "(): topology hash must be the tensor made by antialias_topology_hash (misaligned view given)");
  const int64_t cap = antialias_hash_capacity(T);
  AntialiasHash r;
  r.slots = reinterpret_cast<uint64_t*>(h.data_ptr<int64_t>());
  r.capacity = cap;
  *nbr = reinterpret_cast<int*>(h.data_ptr<int64_t>() + 2 * cap);
  return r;
}

void check_tri(const at::Tensor& tri, const char* op) {
  TORCH_CHECK(tri.is_cuda(), op, "(): tri must be a CUDA tensor");
  TORCH_CHECK(tri.scalar_type() == at::kInt, op, "(): tri must be an int32 tensor");
  TORCH_CHECK(tri.is_contiguous(), op, "(): tri must be a contiguous tensor");
  TORCH_CHECK(tri.dim() == 2 && tri.size(1) == 3, op, "(): tri must have shape [>0, 3], got ", tri.sizes());
}

at::Tensor antialias_topology_hash(const at::Tensor& tri) {
  c10::cuda::CUDAGuard guard(tri.device());
  check_tri(tri, "antialias_topology_hash");
  const int64_t T = tri.size(0);
  const int64_t cap = antialias_hash_capacity(T);
  at::Tensor h = at::empty({topology_numel(T)}, tri.options().dtype(at::kLong));
  AntialiasHash hh;
  hh.slots = reinterpret_cast<uint64_t*>(h.data_ptr<int64_t>());
  hh.capacity = cap;
  int* nbr = reinterpret_cast<int*>(h.data_ptr<int64_t>() + 2 * cap);
  int* gate = reinterpret_cast<int*>(h.data_ptr<int64_t>() + h.numel() - 1);
  NVDR_CUDA_CHECK(antialias_build_hash_cuda(tri.data_ptr<int>(), T, hh, nbr, gate, nvdr::current_stream(tri)));
  return h;
}

// Brings `topology` (built from the triangles now in tri_copy) up to date with tri: the GPU compares the two
// and rebuilds only on a difference, without a host synchronization. epoch: new for every refresh of this
// topology (a per-topology counter), never 0.
void antialias_topology_refresh(const at::Tensor& tri, const at::Tensor& tri_copy, const at::Tensor& topology,
                                int64_t epoch) {
  c10::cuda::CUDAGuard guard(tri.device());
  const char* op = "antialias_topology_refresh";
  check_tri(tri, op);
  check_tri(tri_copy, op);
  TORCH_CHECK(tri_copy.sizes() == tri.sizes() && tri_copy.device() == tri.device(), op,
              "(): tri_copy must match tri in shape and device");
  int* nbr = nullptr;
  AntialiasHash hh = view_hash(topology, tri.size(0), tri.device(), op, &nbr);
  int* gate = reinterpret_cast<int*>(topology.data_ptr<int64_t>() + topology.numel() - 1);
  TORCH_CHECK(epoch > 0 && epoch < (int64_t(1) << 31), op, "(): epoch must be in [1, 2^31), got ", epoch);
  NVDR_CUDA_CHECK(antialias_refresh_hash_cuda(tri.data_ptr<int>(), tri_copy.data_ptr<int>(), tri.size(0), hh, nbr,
                                              gate, (int)epoch, nvdr::current_stream(tri)));
}

AntialiasParams make_params(const at::Tensor& color, const at::Tensor& rast, const at::Tensor& pos,
                            const at::Tensor& tri, const at::Tensor& topology, const char* op) {
  const at::Device dev = color.device();
  check_tensor(color, op, "color", at::kFloat, dev);
  check_tensor(rast, op, "rast", at::kFloat, dev);
  check_tensor(pos, op, "pos", at::kFloat, dev);
  check_tensor(tri, op, "tri", at::kInt, dev);
  TORCH_CHECK(color.dim() == 4, op, "(): color must have shape [>0, >0, >0, >0], got ", color.sizes());
  TORCH_CHECK(rast.dim() == 4 && rast.size(3) == 4 && rast.size(0) == color.size(0) && rast.size(1) == color.size(1) &&
                  rast.size(2) == color.size(2),
              op, "(): rast must have shape [", color.size(0), ", ", color.size(1), ", ", color.size(2),
              ", 4] to match color, got ", rast.sizes());
  TORCH_CHECK((pos.dim() == 3 && pos.size(2) == 4 && pos.size(0) == color.size(0)) || (pos.dim() == 2 && pos.size(1) == 4),
              op, "(): pos must have shape [", color.size(0), ", >0, 4] or [>0, 4], got ", pos.sizes());
  TORCH_CHECK(tri.dim() == 2 && tri.size(1) == 3, op, "(): tri must have shape [>0, 3], got ", tri.sizes());
  AntialiasParams p{};
  p.N = color.size(0);
  p.H = color.size(1);
  p.W = color.size(2);
  p.C = color.size(3);
  p.pos_batched = pos.dim() == 3 ? 1 : 0;
  p.V = pos.size(pos.dim() - 2);
  p.T = tri.size(0);
  p.color = color.data_ptr<float>();
  p.rast = rast.data_ptr<float>();
  p.pos = pos.data_ptr<float>();
  p.tri = tri.data_ptr<int>();
  int* nbr = nullptr;
  view_hash(topology, p.T, dev, op, &nbr);
  p.nbr = nbr;
  return p;
}

// Returns (out, alpha, flags, grad_items) (see antialias_fwd_cuda); grad_items is empty when the image is
// too large for 32-bit item codes, and the items are then found without compaction.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> antialias_fwd(const at::Tensor& color, const at::Tensor& rast,
                                                                         const at::Tensor& pos, const at::Tensor& tri,
                                                                         const at::Tensor& topology) {
  c10::cuda::CUDAGuard guard(color.device());
  AntialiasParams p = make_params(color, rast, pos, tri, topology, "antialias_fwd");
  at::Tensor out = at::empty(color.sizes(), color.options());
  at::Tensor alpha = at::empty({p.N, p.H, p.W, 2}, color.options());
  at::Tensor flags = at::empty({p.N, p.H, p.W}, color.options().dtype(at::kByte));
  const int64_t total = p.N * p.H * p.W;
  const bool compact = 2 * total + 1 < (int64_t(1) << 32);
  at::Tensor items = at::empty({compact ? 1 + 2 * total : 0}, color.options().dtype(at::kInt));
  p.out = out.data_ptr<float>();
  Scratch scratch(color.device());
  NVDR_CUDA_CHECK(antialias_fwd_cuda(p, flags.data_ptr<uint8_t>(), alpha.data_ptr<float>(),
                                     compact ? reinterpret_cast<uint32_t*>(items.data_ptr<int>()) : nullptr,
                                     scratch.handle(), nvdr::current_stream(color)));
  return {out, alpha, flags, items};
}

std::tuple<at::Tensor, at::Tensor> antialias_bwd(const at::Tensor& color, const at::Tensor& rast, const at::Tensor& pos,
                                                 const at::Tensor& tri, const at::Tensor& dy,
                                                 const std::optional<at::Tensor>& alpha,
                                                 const std::optional<at::Tensor>& flags,
                                                 const std::optional<at::Tensor>& grad_items,
                                                 const at::Tensor& topology, double pos_gradient_boost,
                                                 bool deterministic) {
  c10::cuda::CUDAGuard guard(color.device());
  AntialiasParams p = make_params(color, rast, pos, tri, topology, "antialias_bwd");
  // dy is read in place with its strides (the gradient of out.sum() is an expanded tensor).
  TORCH_CHECK(dy.is_cuda() && dy.device() == color.device(), "antialias_bwd(): dy must reside on the device of color (",
              color.device(), "), got ", dy.device());
  TORCH_CHECK(dy.scalar_type() == at::kFloat, "antialias_bwd(): dy must be a float32 tensor, got ",
              c10::toString(dy.scalar_type()));
  TORCH_CHECK(dy.sizes() == color.sizes(), "antialias_bwd(): dy must have the shape of color ", color.sizes(),
              ", got ", dy.sizes());
  for (int d = 0; d < 4; ++d) {
    TORCH_CHECK(dy.stride(d) >= 0, "antialias_bwd(): dy must not have negative strides");
    p.dy_s[d] = dy.stride(d);
  }
  p.dy_contig = dy.is_contiguous() ? 1 : 0;
  at::Tensor grad_color = at::empty(color.sizes(), color.options());
  at::Tensor grad_pos = at::empty(pos.sizes(), pos.options());
  p.dy = dy.data_ptr<float>();
  p.grad_color = grad_color.data_ptr<float>();
  p.grad_pos = grad_pos.data_ptr<float>();
  p.pos_gradient_boost = (float)pos_gradient_boost;
  TORCH_CHECK(!deterministic || p.N * p.H * p.W * 4 < (int64_t(1) << 31),
              "antialias_bwd(): the deterministic backward handles at most 2^29-1 pixels, this call has ",
              p.N * p.H * p.W, "; turn torch.use_deterministic_algorithms off for it");
  // The forward's item weights and flags; without them (or for mismatching tensors) the items are
  // evaluated again.
  const int64_t total = p.N * p.H * p.W;
  const float* alpha_ptr = nullptr;
  const uint8_t* flags_ptr = nullptr;
  if (alpha.has_value() && alpha->defined() && flags.has_value() && flags->defined() && alpha->is_cuda() &&
      flags->is_cuda() && alpha->device() == color.device() && flags->device() == color.device() &&
      alpha->scalar_type() == at::kFloat && flags->scalar_type() == at::kByte && alpha->is_contiguous() &&
      flags->is_contiguous() && alpha->numel() == total * 2 && flags->numel() == total) {
    alpha_ptr = alpha->data_ptr<float>();
    flags_ptr = flags->data_ptr<uint8_t>();
  }
  // The forward's list of items with a position gradient (only meaningful together with its flags).
  const uint32_t* items_ptr = nullptr;
  if (flags_ptr && grad_items.has_value() && grad_items->defined() && grad_items->is_cuda() &&
      grad_items->device() == color.device() && grad_items->scalar_type() == at::kInt &&
      grad_items->is_contiguous() && grad_items->numel() == 1 + 2 * total)
    items_ptr = reinterpret_cast<const uint32_t*>(grad_items->data_ptr<int>());
  Scratch scratch(color.device());
  NVDR_CUDA_CHECK(antialias_bwd_cuda(p, flags_ptr, alpha_ptr, items_ptr, deterministic ? 1 : 0, scratch.handle(),
                                     nvdr::current_stream(color)));
  return {grad_color, grad_pos};
}

// The whole op with its autograd node in C++: the forward and backward of antialias() on CUDA tensors run
// without a Python autograd.Function (whose Python backward and GIL hand-off are a large part of the
// host time that small and mid-size images wait for). The node saves the forward's item state; its
// backward never reads the topology (which a later call may have refreshed).
class AntialiasNode : public torch::autograd::Function<AntialiasNode> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& color, const at::Tensor& rast,
                            const at::Tensor& pos, const at::Tensor& tri, const at::Tensor& topology,
                            double pos_gradient_boost) {
    at::AutoDispatchBelowADInplaceOrView below;
    auto [out, alpha, flags, items] = antialias_fwd(color, rast, pos, tri, topology);
    ctx->save_for_backward({color, rast, pos, tri, topology, alpha, flags, items});
    ctx->saved_data["boost"] = pos_gradient_boost;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto s = ctx->get_saved_variables();
    const at::Tensor& dy = grads[0];
    if (!dy.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const bool det = at::globalContext().deterministicAlgorithms();
    auto [g_color, g_pos] = antialias_bwd(s[0], s[1], s[2], s[3], dy, s[5], s[6], s[7], s[4],
                                          ctx->saved_data["boost"].toDouble(), det);
    return {g_color, at::Tensor(), g_pos, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor antialias_autograd(const at::Tensor& color, const at::Tensor& rast, const at::Tensor& pos,
                              const at::Tensor& tri, const at::Tensor& topology, double pos_gradient_boost) {
  return AntialiasNode::apply(color, rast, pos, tri, topology, pos_gradient_boost);
}

// Below autograd (inference mode, or no tensor tracked): the forward alone.
at::Tensor antialias_nograd(const at::Tensor& color, const at::Tensor& rast, const at::Tensor& pos,
                            const at::Tensor& tri, const at::Tensor& topology, double) {
  return std::get<0>(antialias_fwd(color, rast, pos, tri, topology));
}

at::Tensor antialias_meta(const at::Tensor& color, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                          const at::Tensor&, double) {
  return at::empty(color.sizes(), color.options());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> antialias_fwd_meta(const at::Tensor& color, const at::Tensor&,
                                                                              const at::Tensor&, const at::Tensor&,
                                                                              const at::Tensor&) {
  const int64_t total = color.size(0) * color.size(1) * color.size(2);
  const bool compact = 2 * total + 1 < (int64_t(1) << 32);
  return {at::empty(color.sizes(), color.options()),
          at::empty({color.size(0), color.size(1), color.size(2), 2}, color.options()),
          at::empty({color.size(0), color.size(1), color.size(2)}, color.options().dtype(at::kByte)),
          at::empty({compact ? 1 + 2 * total : 0}, color.options().dtype(at::kInt))};
}

std::tuple<at::Tensor, at::Tensor> antialias_bwd_meta(const at::Tensor& color, const at::Tensor&, const at::Tensor& pos,
                                                      const at::Tensor&, const at::Tensor&,
                                                      const std::optional<at::Tensor>&,
                                                      const std::optional<at::Tensor>&,
                                                      const std::optional<at::Tensor>&, const at::Tensor&, double,
                                                      bool) {
  return {at::empty(color.sizes(), color.options()), at::empty(pos.sizes(), pos.options())};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nvdiffrast, m) {
  m.def("antialias_topology_hash(Tensor tri) -> Tensor");
  m.def("antialias(Tensor color, Tensor rast, Tensor pos, Tensor tri, Tensor topology, float pos_gradient_boost) -> Tensor");
  m.def("antialias_topology_refresh(Tensor tri, Tensor(a!) tri_copy, Tensor(b!) topology, int epoch) -> ()");
  m.def(
      "antialias_fwd(Tensor color, Tensor rast, Tensor pos, Tensor tri, Tensor topology) -> (Tensor, Tensor, "
      "Tensor, Tensor)");
  m.def(
      "antialias_bwd(Tensor color, Tensor rast, Tensor pos, Tensor tri, Tensor dy, Tensor? alpha, Tensor? flags, "
      "Tensor? grad_items, Tensor topology, float pos_gradient_boost, bool deterministic) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(nvdiffrast, CUDA, m) {
  m.impl("antialias_topology_hash", &antialias_topology_hash);
  m.impl("antialias_topology_refresh", &antialias_topology_refresh);
  m.impl("antialias", &antialias_nograd);
  m.impl("antialias_fwd", &antialias_fwd);
  m.impl("antialias_bwd", &antialias_bwd);
}

TORCH_LIBRARY_IMPL(nvdiffrast, AutogradCUDA, m) {
  m.impl("antialias", &antialias_autograd);
}

TORCH_LIBRARY_IMPL(nvdiffrast, Meta, m) {
  m.impl("antialias", &antialias_meta);
  m.impl("antialias_fwd", &antialias_fwd_meta);
  m.impl("antialias_bwd", &antialias_bwd_meta);
}
