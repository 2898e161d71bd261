// torch binding of the texture kernels: argument checks, allocation, device guard, current stream.
#include <ATen/ops/empty.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common.h"
#include "scratch.h"
#include "kernels/mip.h"
#include "kernels/texture.h"

namespace {

using nvdr::Scratch;

void check_tensor(const at::Tensor& t, const char* op, const char* name, const at::Device& dev) {
  TORCH_CHECK(t.is_cuda(), op, "(): input ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.device() == dev, op, "(): input ", name, " must reside on the same GPU device as the other inputs (",
              name, " is on ", t.device(), ", expected ", dev, ")");
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, "(): input ", name, " must be a float32 tensor, got ",
              c10::toString(t.scalar_type()));
  TORCH_CHECK(t.is_contiguous(), op, "(): input ", name, " must be a contiguous tensor");
}

// Sampling part of the parameters (modes, uv, uv_da, bias); levels are filled separately.
TextureParams sampling_params(const at::Tensor& uv, int64_t filter_mode, int64_t boundary_mode, const char* op) {
  TORCH_CHECK(filter_mode >= 0 && filter_mode <= 3, op, "(): filter_mode code must be in [0, 3], got ", filter_mode);
  TORCH_CHECK(boundary_mode >= 0 && boundary_mode <= 3, op, "(): boundary_mode code must be in [0, 3], got ",
              boundary_mode);
  const bool cube = boundary_mode == NVDR_BOUNDARY_CUBE;
  check_tensor(uv, op, "uv", uv.device());
  TORCH_CHECK(uv.dim() == 4 && uv.size(3) == (cube ? 3 : 2), op, "(): uv must have shape [>0, >0, >0, ",
              cube ? 3 : 2, "]", cube ? " in cube map mode" : "", ", got ", uv.sizes());
  TextureParams p{};
  p.N = uv.size(0);
  p.h = uv.size(1);
  p.w = uv.size(2);
  p.filter = (int)filter_mode;
  p.boundary = (int)boundary_mode;
  return p;
}

// Base texture checks; sets tex_batch and C.
void set_base(TextureParams& p, const at::Tensor& tex, const at::Device& dev, const char* op) {
  const bool cube = p.boundary == NVDR_BOUNDARY_CUBE;
  check_tensor(tex, op, "tex", dev);
  if (cube) {
    TORCH_CHECK(tex.dim() == 5 && tex.size(1) == 6 && tex.size(2) == tex.size(3), op,
                "(): tex must have shape [>0, 6, S, S, >0] in cube map mode, got ", tex.sizes());
  } else {
    TORCH_CHECK(tex.dim() == 4, op, "(): tex must have shape [>0, >0, >0, >0], got ", tex.sizes());
  }
  p.tex_batch = tex.size(0);
  p.C = tex.size(tex.dim() - 1);
  TORCH_CHECK(p.tex_batch == 1 || p.tex_batch == p.N, op, "(): minibatch size mismatch between inputs tex, uv (",
              p.tex_batch, " vs ", p.N, ")");
}

// uv_da / bias (used by the mipmapping modes only) and the level count of the plain modes.
void set_lod_inputs(TextureParams& p, const at::Tensor& uv, const std::optional<at::Tensor>& uv_da,
                    const std::optional<at::Tensor>& bias, const char* op) {
  const bool cube = p.boundary == NVDR_BOUNDARY_CUBE;
  const at::Device dev = uv.device();
  p.uv = uv.data_ptr<float>();
  if (uv_da.has_value() && p.filter >= NVDR_FILTER_LINEAR_MIP_NEAREST) {
    const at::Tensor& d = uv_da.value();
    check_tensor(d, op, "uv_da", dev);
    TORCH_CHECK(d.dim() == 4 && d.size(0) == p.N && d.size(1) == p.h && d.size(2) == p.w && d.size(3) == (cube ? 6 : 4),
                op, "(): uv_da must have shape [", p.N, ", ", p.h, ", ", p.w, ", ", cube ? 6 : 4, "], got ", d.sizes());
    p.uv_da = d.data_ptr<float>();
  }
  if (bias.has_value() && p.filter >= NVDR_FILTER_LINEAR_MIP_NEAREST) {
    const at::Tensor& b = bias.value();
    check_tensor(b, op, "mip_level_bias", dev);
    TORCH_CHECK(b.dim() == 3 && b.size(0) == p.N && b.size(1) == p.h && b.size(2) == p.w, op,
                "(): mip_level_bias must have shape [", p.N, ", ", p.h, ", ", p.w, "], got ", b.sizes());
    p.bias = b.data_ptr<float>();
  }
  // Plain filtering samples the base level only.
  if (p.filter < NVDR_FILTER_LINEAR_MIP_NEAREST) p.num_levels = 1;
}

// Fills the level / sampling part of the parameters and validates shapes.
TextureParams make_params(const std::vector<at::Tensor>& levels, const at::Tensor& uv,
                          const std::optional<at::Tensor>& uv_da, const std::optional<at::Tensor>& bias,
                          int64_t filter_mode, int64_t boundary_mode, const char* op) {
  const at::Device dev = uv.device();
  TextureParams p = sampling_params(uv, filter_mode, boundary_mode, op);
  const bool cube = boundary_mode == NVDR_BOUNDARY_CUBE;
  TORCH_CHECK(!levels.empty(), op, "(): at least one texture level is required");
  TORCH_CHECK((int)levels.size() <= NVDR_MAX_MIP_LEVELS, op, "(): at most ", NVDR_MAX_MIP_LEVELS,
              " texture levels are supported, got ", levels.size());
  p.num_levels = (int)levels.size();
  const at::Tensor& tex = levels[0];
  set_base(p, tex, dev, op);
  int64_t offset = 0;
  for (size_t l = 0; l < levels.size(); ++l) {
    const at::Tensor& t = levels[l];
    check_tensor(t, op, l == 0 ? "tex" : "mip level", dev);
    TORCH_CHECK(t.dim() == tex.dim() && t.size(0) == p.tex_batch && t.size(t.dim() - 1) == p.C &&
                    (!cube || (t.size(1) == 6 && t.size(2) == t.size(3))),
                op, "(): mip level ", l, " has shape ", t.sizes(), ", which does not match the texture ", tex.sizes());
    const int64_t hh = cube ? t.size(2) : t.size(1), ww = cube ? t.size(3) : t.size(2);
    TORCH_CHECK(hh > 0 && ww > 0 && hh <= 65536 && ww <= 65536, op, "(): texture level ", l, " size ", hh, "x", ww,
                " is out of range (1..65536)");
    p.levels[l] = t.data_ptr<float>();
    p.level_h[l] = (int)hh;
    p.level_w[l] = (int)ww;
    p.level_offset[l] = offset;
    offset += t.numel() / p.C;
  }
  p.grad_texels = offset;
  set_lod_inputs(p, uv, uv_da, bias, op);
  return p;
}

// Level sizes of the box pyramid of a base level (the rule of texture_mip_build): each side halves
// until 1; num_levels counts the base level. Returns the texels of levels 1.. per image-face.
int64_t pyramid_sizes(int h0, int w0, int num_levels, int* h, int* w, const char* op) {
  h[0] = h0;
  w[0] = w0;
  int64_t texels = 0;
  for (int l = 1; l < num_levels; ++l) {
    const int hp = h[l - 1], wp = w[l - 1];
    TORCH_CHECK(!((hp > 1 && hp % 2) || (wp > 1 && wp % 2)),
                op, "(): Mip-map size error - cannot downsample an odd extent greater than 1 (level ", l - 1, " is ",
                wp, "x", hp, ")");
    h[l] = hp > 1 ? hp / 2 : 1;
    w[l] = wp > 1 ? wp / 2 : 1;
    texels += (int64_t)h[l] * w[l];
  }
  return texels;
}

// Levels from a base texture and its pyramid held in one flat tensor (levels 1..num_levels-1 back to
// back, each [B, (6,) H_l, W_l, C]): what texture_mip_build_flat returns.
TextureParams make_params_flat(const at::Tensor& tex, const at::Tensor& mips, int64_t num_levels, const at::Tensor& uv,
                               const std::optional<at::Tensor>& uv_da, const std::optional<at::Tensor>& bias,
                               int64_t filter_mode, int64_t boundary_mode, const char* op) {
  const at::Device dev = uv.device();
  TextureParams p = sampling_params(uv, filter_mode, boundary_mode, op);
  const bool cube = boundary_mode == NVDR_BOUNDARY_CUBE;
  TORCH_CHECK(num_levels >= 1 && num_levels <= NVDR_MAX_MIP_LEVELS, op, "(): num_levels must be in [1, ",
              NVDR_MAX_MIP_LEVELS, "], got ", num_levels);
  set_base(p, tex, dev, op);
  check_tensor(mips, op, "mips", dev);
  const int64_t h0 = cube ? tex.size(2) : tex.size(1), w0 = cube ? tex.size(3) : tex.size(2);
  TORCH_CHECK(h0 > 0 && w0 > 0 && h0 <= 65536 && w0 <= 65536, op, "(): texture size ", h0, "x", w0,
              " is out of range (1..65536)");
  int hs[NVDR_MAX_MIP_LEVELS], ws[NVDR_MAX_MIP_LEVELS];
  const int64_t per_face = pyramid_sizes((int)h0, (int)w0, (int)num_levels, hs, ws, op);
  const int64_t faces = p.tex_batch * (cube ? 6 : 1);
  TORCH_CHECK(mips.numel() == per_face * faces * p.C, op, "(): the mip pyramid holds ", mips.numel(),
              " values, expected ", per_face * faces * p.C, " for ", num_levels, " levels of tex ", tex.sizes());
  p.num_levels = (int)num_levels;
  const float* base = mips.data_ptr<float>();
  int64_t offset = 0;
  for (int l = 0; l < p.num_levels; ++l) {
    p.levels[l] = l == 0 ? tex.data_ptr<float>() : base + (offset - h0 * w0 * faces) * p.C;
    p.level_h[l] = hs[l];
    p.level_w[l] = ws[l];
    p.level_offset[l] = offset;
    offset += (int64_t)hs[l] * ws[l] * faces;
  }
  p.grad_texels = offset;
  set_lod_inputs(p, uv, uv_da, bias, op);
  return p;
}

at::Tensor texture_fwd(at::TensorList levels_in, const at::Tensor& uv, const std::optional<at::Tensor>& uv_da,
                       const std::optional<at::Tensor>& bias, int64_t filter_mode, int64_t boundary_mode) {
  c10::cuda::CUDAGuard guard(uv.device());
  std::vector<at::Tensor> levels(levels_in.begin(), levels_in.end());
  TextureParams p = make_params(levels, uv, uv_da, bias, filter_mode, boundary_mode, "texture_fwd");
  at::Tensor out = at::empty({p.N, p.h, p.w, p.C}, uv.options());
  p.out = out.data_ptr<float>();
  NVDR_CUDA_CHECK(texture_fwd_cuda(p, nvdr::current_stream(uv)));
  return out;
}

at::Tensor texture_fwd_flat(const at::Tensor& tex, const at::Tensor& mips, int64_t num_levels, const at::Tensor& uv,
                            const std::optional<at::Tensor>& uv_da, const std::optional<at::Tensor>& bias,
                            int64_t filter_mode, int64_t boundary_mode) {
  c10::cuda::CUDAGuard guard(uv.device());
  TextureParams p =
      make_params_flat(tex, mips, num_levels, uv, uv_da, bias, filter_mode, boundary_mode, "texture_fwd");
  at::Tensor out = at::empty({p.N, p.h, p.w, p.C}, uv.options());
  p.out = out.data_ptr<float>();
  NVDR_CUDA_CHECK(texture_fwd_cuda(p, nvdr::current_stream(uv)));
  return out;
}

// dy is read in place with its strides: the gradient of out.sum() is an expanded (stride 0) tensor, and
// making it contiguous would write a full buffer for nothing.
void set_dy(TextureParams& p, const at::Tensor& dy, const at::Device& dev, const char* op) {
  TORCH_CHECK(dy.is_cuda() && dy.device() == dev, op, "(): dy must reside on the device of uv (", dev, "), got ",
              dy.device());
  TORCH_CHECK(dy.scalar_type() == at::kFloat, op, "(): dy must be a float32 tensor, got ",
              c10::toString(dy.scalar_type()));
  TORCH_CHECK(dy.dim() == 4 && dy.size(0) == p.N && dy.size(1) == p.h && dy.size(2) == p.w && dy.size(3) == p.C, op,
              "(): dy must have shape [", p.N, ", ", p.h, ", ", p.w, ", ", p.C, "], got ", dy.sizes());
  for (int d = 0; d < 4; ++d) TORCH_CHECK(dy.stride(d) >= 0, op, "(): dy must not have negative strides");
  p.dy = dy.data_ptr<float>();
  p.dy_contig = dy.is_contiguous() ? 1 : 0;
  p.dy_sn = dy.stride(0);
  p.dy_sh = dy.stride(1);
  p.dy_sw = dy.stride(2);
  p.dy_sc = dy.stride(3);
}

// uv / uv_da / bias gradient outputs (empty where not produced) wired into p.
std::tuple<at::Tensor, at::Tensor, at::Tensor> param_grads(TextureParams& p, const at::Tensor& uv, int64_t filter_mode,
                                                           int64_t boundary_mode) {
  const bool cube = boundary_mode == NVDR_BOUNDARY_CUBE;
  at::Tensor grad_uv = filter_mode != NVDR_FILTER_NEAREST ? at::empty(uv.sizes(), uv.options())
                                                          : at::empty({0}, uv.options());
  const bool lml = filter_mode == NVDR_FILTER_LINEAR_MIP_LINEAR;
  at::Tensor grad_uv_da = (lml && p.uv_da) ? at::empty({p.N, p.h, p.w, cube ? 6 : 4}, uv.options())
                                           : at::empty({0}, uv.options());
  at::Tensor grad_bias = (lml && p.bias) ? at::empty({p.N, p.h, p.w}, uv.options()) : at::empty({0}, uv.options());
  p.grad_uv = grad_uv.numel() ? grad_uv.data_ptr<float>() : nullptr;
  p.grad_uv_da = grad_uv_da.numel() ? grad_uv_da.data_ptr<float>() : nullptr;
  p.grad_bias = grad_bias.numel() ? grad_bias.data_ptr<float>() : nullptr;
  return {grad_uv, grad_uv_da, grad_bias};
}

void check_det_size(const TextureParams& p, int64_t filter_mode, const char* op) {
  const int64_t slots = filter_mode == NVDR_FILTER_NEAREST ? 1 : (filter_mode == NVDR_FILTER_LINEAR_MIP_LINEAR ? 8 : 4);
  TORCH_CHECK(p.N * p.h * p.w * slots < (int64_t(1) << 31), op,
              "(): the deterministic backward handles at most 2^31-1 texel contributions, this call has ",
              p.N * p.h * p.w * slots, "; turn torch.use_deterministic_algorithms off for it");
}

std::tuple<std::vector<at::Tensor>, at::Tensor, at::Tensor, at::Tensor> texture_bwd(
    at::TensorList levels_in, const at::Tensor& uv, const std::optional<at::Tensor>& uv_da,
    const std::optional<at::Tensor>& bias, const at::Tensor& dy, int64_t filter_mode, int64_t boundary_mode,
    bool deterministic) {
  c10::cuda::CUDAGuard guard(uv.device());
  std::vector<at::Tensor> levels(levels_in.begin(), levels_in.end());
  TextureParams p = make_params(levels, uv, uv_da, bias, filter_mode, boundary_mode, "texture_bwd");
  set_dy(p, dy, uv.device(), "texture_bwd");
  // Gradients of all levels share one buffer (the kernels address it by level offset).
  int64_t all_texels = 0;
  for (const auto& t : levels) all_texels += t.numel() / p.C;
  at::Tensor flat = at::empty({all_texels * p.C}, uv.options());
  std::vector<at::Tensor> grads;
  int64_t off = 0;
  for (const auto& t : levels) {
    grads.push_back(flat.narrow(0, off, t.numel()).view(t.sizes()));
    off += t.numel();
  }
  p.grad_flat = flat.data_ptr<float>();
  p.grad_stride = p.C;
  p.grad_texels = all_texels;
  auto [grad_uv, grad_uv_da, grad_bias] = param_grads(p, uv, filter_mode, boundary_mode);
  if (deterministic) check_det_size(p, filter_mode, "texture_bwd");
  Scratch scratch(uv.device());
  NVDR_CUDA_CHECK(texture_bwd_cuda(p, deterministic ? 1 : 0, scratch.handle(), nvdr::current_stream(uv)));
  return {grads, grad_uv, grad_uv_da, grad_bias};
}

// Backward for a box-filter pyramid of the base texture (internal or prebuilt stack): the level
// gradients land in one padded scratch buffer and are folded into the base texture by the pyramid's
// adjoint, so only the base gradient is materialized. want_tex = false skips the texel gradients.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> bwd_pyramid(TextureParams& p, const at::Tensor& tex,
                                                                       const at::Tensor& uv, const at::Tensor& dy,
                                                                       bool deterministic, bool want_tex) {
  set_dy(p, dy, uv.device(), "texture_bwd");
  const bool cube = p.boundary == NVDR_BOUNDARY_CUBE;
  for (int l = 1; l < p.num_levels; ++l) {
    const int hp = p.level_h[l - 1], wp = p.level_w[l - 1];
    TORCH_CHECK(p.level_h[l] == (hp > 1 ? hp / 2 : 1) && p.level_w[l] == (wp > 1 ? wp / 2 : 1),
                "texture_bwd(): mip level ", l, " size ", p.level_w[l], "x", p.level_h[l], " is not half of level ",
                l - 1, " (", wp, "x", hp, ")");
  }
  auto [grad_uv, grad_uv_da, grad_bias] = param_grads(p, uv, p.filter, p.boundary);
  at::Tensor g_tex;
  at::Tensor flat;
  if (want_tex) {
    p.grad_stride = p.C == 3 ? 4 : p.C;
    flat = at::empty({p.grad_texels * p.grad_stride}, uv.options());
    p.grad_flat = flat.data_ptr<float>();
  } else {
    p.grad_stride = p.C;
    p.grad_flat = nullptr;
  }
  if (deterministic && want_tex) check_det_size(p, p.filter, "texture_bwd");
  Scratch scratch(uv.device());
  const cudaStream_t stream = nvdr::current_stream(uv);
  NVDR_CUDA_CHECK(texture_bwd_cuda(p, deterministic ? 1 : 0, scratch.handle(), stream));
  if (want_tex) {
    g_tex = at::empty(tex.sizes(), tex.options());
    MipParams m{};
    m.num_levels = p.num_levels;
    m.C = p.C;
    m.in_stride = p.grad_stride;
    m.batch = cube ? tex.size(0) * 6 : tex.size(0);
    for (int l = 0; l < p.num_levels; ++l) {
      m.in[l] = p.grad_flat + p.level_offset[l] * p.grad_stride;
      m.h[l] = p.level_h[l];
      m.w[l] = p.level_w[l];
    }
    m.out[0] = g_tex.data_ptr<float>();
    NVDR_CUDA_CHECK(mip_adjoint_cuda(m, stream));
  } else {
    g_tex = at::empty({0}, uv.options());
  }
  return {g_tex, grad_uv, grad_uv_da, grad_bias};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> texture_bwd_mip(
    at::TensorList levels_in, const at::Tensor& uv, const std::optional<at::Tensor>& uv_da,
    const std::optional<at::Tensor>& bias, const at::Tensor& dy, int64_t filter_mode, int64_t boundary_mode,
    bool deterministic, bool want_tex) {
  c10::cuda::CUDAGuard guard(uv.device());
  std::vector<at::Tensor> levels(levels_in.begin(), levels_in.end());
  TextureParams p = make_params(levels, uv, uv_da, bias, filter_mode, boundary_mode, "texture_bwd");
  return bwd_pyramid(p, levels[0], uv, dy, deterministic, want_tex);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> texture_bwd_mip_flat(
    const at::Tensor& tex, const at::Tensor& mips, int64_t num_levels, const at::Tensor& uv,
    const std::optional<at::Tensor>& uv_da, const std::optional<at::Tensor>& bias, const at::Tensor& dy,
    int64_t filter_mode, int64_t boundary_mode, bool deterministic, bool want_tex) {
  c10::cuda::CUDAGuard guard(uv.device());
  TextureParams p =
      make_params_flat(tex, mips, num_levels, uv, uv_da, bias, filter_mode, boundary_mode, "texture_bwd");
  return bwd_pyramid(p, tex, uv, dy, deterministic, want_tex);
}

at::Tensor texture_fwd_meta(at::TensorList levels, const at::Tensor& uv, const std::optional<at::Tensor>&,
                            const std::optional<at::Tensor>&, int64_t, int64_t) {
  const at::Tensor& tex = levels[0];
  return at::empty({uv.size(0), uv.size(1), uv.size(2), tex.size(tex.dim() - 1)}, uv.options());
}

// Box-filter levels 1..num_levels of tex ([B, H, W, C] or cube [B, 6, S, S, C]); every halved side must be
// even (or 1).
std::vector<at::Tensor> texture_mip_build(const at::Tensor& tex, int64_t num_levels, bool cube) {
  c10::cuda::CUDAGuard guard(tex.device());
  check_tensor(tex, "texture_mip_build", "tex", tex.device());
  TORCH_CHECK(cube ? (tex.dim() == 5 && tex.size(1) == 6 && tex.size(2) == tex.size(3)) : tex.dim() == 4,
              "texture_mip_build(): tex must have shape ", cube ? "[>0, 6, S, S, >0]" : "[>0, >0, >0, >0]", ", got ",
              tex.sizes());
  TORCH_CHECK(num_levels >= 0 && num_levels < NVDR_MAX_MIP_LEVELS, "texture_mip_build(): num_levels must be in [0, ",
              NVDR_MAX_MIP_LEVELS - 1, "], got ", num_levels);
  MipParams p{};
  p.C = tex.size(tex.dim() - 1);
  p.batch = cube ? tex.size(0) * 6 : tex.size(0);
  p.h[0] = (int)(cube ? tex.size(2) : tex.size(1));
  p.w[0] = (int)(cube ? tex.size(3) : tex.size(2));
  p.in[0] = tex.data_ptr<float>();
  p.num_levels = (int)num_levels + 1;
  std::vector<at::Tensor> out;
  for (int l = 1; l < p.num_levels; ++l) {
    const int hp = p.h[l - 1], wp = p.w[l - 1];
    TORCH_CHECK(!((hp > 1 && hp % 2) || (wp > 1 && wp % 2)),
                "Mip-map size error - cannot downsample an odd extent greater than 1 (level ", l - 1, " is ", wp, "x",
                hp, ")");
    p.h[l] = hp > 1 ? hp / 2 : 1;
    p.w[l] = wp > 1 ? wp / 2 : 1;
    at::Tensor t = cube ? at::empty({tex.size(0), 6, p.h[l], p.w[l], p.C}, tex.options())
                        : at::empty({tex.size(0), p.h[l], p.w[l], p.C}, tex.options());
    p.out[l] = t.data_ptr<float>();
    out.push_back(t);
  }
  NVDR_CUDA_CHECK(mip_build_cuda(p, nvdr::current_stream(tex)));
  return out;
}

// Levels 1..num_levels of tex in one flat tensor, back to back (the layout make_params_flat reads):
// one allocation instead of one tensor per level.
at::Tensor texture_mip_build_flat(const at::Tensor& tex, int64_t num_levels, bool cube) {
  c10::cuda::CUDAGuard guard(tex.device());
  check_tensor(tex, "texture_mip_build", "tex", tex.device());
  TORCH_CHECK(cube ? (tex.dim() == 5 && tex.size(1) == 6 && tex.size(2) == tex.size(3)) : tex.dim() == 4,
              "texture_mip_build(): tex must have shape ", cube ? "[>0, 6, S, S, >0]" : "[>0, >0, >0, >0]", ", got ",
              tex.sizes());
  TORCH_CHECK(num_levels >= 0 && num_levels < NVDR_MAX_MIP_LEVELS, "texture_mip_build(): num_levels must be in [0, ",
              NVDR_MAX_MIP_LEVELS - 1, "], got ", num_levels);
  MipParams p{};
  p.C = tex.size(tex.dim() - 1);
  p.batch = cube ? tex.size(0) * 6 : tex.size(0);
  p.num_levels = (int)num_levels + 1;
  const int h0 = (int)(cube ? tex.size(2) : tex.size(1)), w0 = (int)(cube ? tex.size(3) : tex.size(2));
  const int64_t per_face = pyramid_sizes(h0, w0, p.num_levels, p.h, p.w, "texture_mip_build");
  at::Tensor flat = at::empty({per_face * p.batch * p.C}, tex.options());
  p.in[0] = tex.data_ptr<float>();
  float* base = flat.data_ptr<float>();
  int64_t off = 0;
  for (int l = 1; l < p.num_levels; ++l) {
    p.out[l] = base + off;
    off += (int64_t)p.h[l] * p.w[l] * p.batch * p.C;
  }
  if (p.num_levels > 1) NVDR_CUDA_CHECK(mip_build_cuda(p, nvdr::current_stream(tex)));
  return flat;
}

// Gradient on the base texture from gradients on every level of its box-filter pyramid.
at::Tensor texture_mip_adjoint(at::TensorList grads, bool cube) {
  TORCH_CHECK(!grads.empty() && (int)grads.size() <= NVDR_MAX_MIP_LEVELS, "texture_mip_adjoint(): 1..",
              NVDR_MAX_MIP_LEVELS, " level gradients expected, got ", grads.size());
  const at::Tensor& g0 = grads[0];
  c10::cuda::CUDAGuard guard(g0.device());
  MipParams p{};
  p.num_levels = (int)grads.size();
  p.C = g0.size(g0.dim() - 1);
  p.in_stride = p.C;
  p.batch = cube ? g0.size(0) * 6 : g0.size(0);
  std::vector<at::Tensor> keep;
  for (size_t l = 0; l < grads.size(); ++l) {
    at::Tensor g = grads[l].contiguous();
    check_tensor(g, "texture_mip_adjoint", "level gradient", g0.device());
    TORCH_CHECK(g.dim() == g0.dim() && g.size(0) == g0.size(0) && g.size(g.dim() - 1) == p.C,
                "texture_mip_adjoint(): level ", l, " gradient has shape ", g.sizes(), ", base ", g0.sizes());
    p.h[l] = (int)(cube ? g.size(2) : g.size(1));
    p.w[l] = (int)(cube ? g.size(3) : g.size(2));
    if (l > 0)
      TORCH_CHECK(p.h[l] == (p.h[l - 1] > 1 ? p.h[l - 1] / 2 : 1) && p.w[l] == (p.w[l - 1] > 1 ? p.w[l - 1] / 2 : 1),
                  "texture_mip_adjoint(): level ", l, " size ", p.w[l], "x", p.h[l], " is not half of level ", l - 1);
    p.in[l] = g.data_ptr<float>();
    keep.push_back(g);
  }
  at::Tensor out = at::empty(g0.sizes(), g0.options());
  p.out[0] = out.data_ptr<float>();
  NVDR_CUDA_CHECK(mip_adjoint_cuda(p, nvdr::current_stream(g0)));
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(nvdiffrast, m) {
  m.def(
      "texture_fwd(Tensor[] levels, Tensor uv, Tensor? uv_da, Tensor? mip_level_bias, int filter_mode, "
      "int boundary_mode) -> Tensor");
  m.def(
      "texture_bwd(Tensor[] levels, Tensor uv, Tensor? uv_da, Tensor? mip_level_bias, Tensor dy, int filter_mode, "
      "int boundary_mode, bool deterministic) -> (Tensor[], Tensor, Tensor, Tensor)");
  m.def(
      "texture_bwd_mip(Tensor[] levels, Tensor uv, Tensor? uv_da, Tensor? mip_level_bias, Tensor dy, "
      "int filter_mode, int boundary_mode, bool deterministic, bool want_tex) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("texture_mip_build(Tensor tex, int num_levels, bool cube) -> Tensor[]");
  m.def("texture_mip_build_flat(Tensor tex, int num_levels, bool cube) -> Tensor");
  m.def(
      "texture_fwd_flat(Tensor tex, Tensor mips, int num_levels, Tensor uv, Tensor? uv_da, Tensor? mip_level_bias, "
      "int filter_mode, int boundary_mode) -> Tensor");
  m.def(
      "texture_bwd_mip_flat(Tensor tex, Tensor mips, int num_levels, Tensor uv, Tensor? uv_da, "
      "Tensor? mip_level_bias, Tensor dy, int filter_mode, int boundary_mode, bool deterministic, bool want_tex) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def("texture_mip_adjoint(Tensor[] grads, bool cube) -> Tensor");
}

TORCH_LIBRARY_IMPL(nvdiffrast, CUDA, m) {
  m.impl("texture_fwd", &texture_fwd);
  m.impl("texture_bwd", &texture_bwd);
  m.impl("texture_bwd_mip", &texture_bwd_mip);
  m.impl("texture_mip_build", &texture_mip_build);
  m.impl("texture_mip_build_flat", &texture_mip_build_flat);
  m.impl("texture_fwd_flat", &texture_fwd_flat);
  m.impl("texture_bwd_mip_flat", &texture_bwd_mip_flat);
  m.impl("texture_mip_adjoint", &texture_mip_adjoint);
}

TORCH_LIBRARY_IMPL(nvdiffrast, Meta, m) { m.impl("texture_fwd", &texture_fwd_meta); }
