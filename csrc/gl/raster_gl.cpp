// OpenGL 4.3 core rasterizer producing the CUDA rasterizer's output layout (spec §3.3, §4.1):
// rast = (u, v, z/w, encoded triangle id + 1), rast_db = (du/dX, du/dY, dv/dX, dv/dY) per pixel.
//
// Pipeline: vertices are pulled from shader storage buffers (pos, tri), so out-of-range indices can
// be detected and their triangles dropped; a geometry shader forwards the three *unclipped*
// clip-space vertices to the fragment shader, which evaluates the barycentric formulas at the pixel
// center (GL only decides coverage and depth order; it clips against all six planes, no depth
// clamp). Images go to the layers of a layered framebuffer (layer = image index - first image of
// the pass); range mode issues one indirect draw per image whose base instance selects the image.
// Outputs larger than the driver's framebuffer limits are rendered in tiles, by an affine change of
// clip coordinates that maps the tile to the viewport.
#include "gl/raster_gl.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

namespace nvdr_gl {
namespace {

constexpr std::size_t kLayerBudgetBytes = std::size_t(1) << 30;  // framebuffer memory per pass

const char* kVertexShader = R"(
layout(location = 0) in int a_image;  // per instance: base instance + instance id = image index
layout(std430, binding = 0) readonly buffer PosBuf { vec4 pos[]; };
layout(std430, binding = 1) readonly buffer TriBuf { int tri[]; };
uniform int u_num_verts;
uniform int u_instanced;
uniform int u_tri_base;  // first int of tri[] in the bound range (storage blocks have size limits)
uniform int u_pos_base;  // first vec4 of pos[] in the bound range
out VData { vec4 clip; flat int ok; flat int tid; flat int img; } vout;
void main() {
  int idx = tri[gl_VertexID - u_tri_base];
  bool ok = idx >= 0 && idx < u_num_verts;
  int base = (u_instanced != 0 ? a_image * u_num_verts : 0) - u_pos_base;
  vout.clip = ok ? pos[base + idx] : vec4(0.0);
  vout.ok = ok ? 1 : 0;
  vout.tid = gl_VertexID / 3;
  vout.img = a_image;
}
)";

const char* kGeometryShader = R"(
layout(triangles) in;
layout(triangle_strip, max_vertices = 3) out;
in VData { vec4 clip; flat int ok; flat int tid; flat int img; } vin[];
uniform vec4 u_xform;    // tile mapping: x' = x*sx + w*ox, y' = y*sy + w*oy
uniform int u_layer_base;
flat out vec4 g_p0;
flat out vec4 g_p1;
flat out vec4 g_p2;
flat out int g_tid;
flat out int g_img;
void main() {
  if (vin[0].ok == 0 || vin[1].ok == 0 || vin[2].ok == 0) return;
  for (int i = 0; i < 3; ++i) {
    vec4 c = vin[i].clip;
    gl_Position = vec4(c.x * u_xform.x + c.w * u_xform.z, c.y * u_xform.y + c.w * u_xform.w, c.z, c.w);
    gl_Layer = vin[0].img - u_layer_base;
    g_p0 = vin[0].clip;
    g_p1 = vin[1].clip;
    g_p2 = vin[2].clip;
    g_tid = vin[0].tid;
    g_img = vin[0].img;
    EmitVertex();
  }
  EndPrimitive();
}
)";

const char* kFragmentShader = R"(
flat in vec4 g_p0;
flat in vec4 g_p1;
flat in vec4 g_p2;
flat in int g_tid;
flat in int g_img;
uniform ivec2 u_res;     // full image (W, H)
uniform ivec2 u_origin;  // tile origin in the full image
layout(location = 0) out vec4 o_rast;
#if OUTPUT_DB
layout(location = 1) out vec4 o_db;
#endif
#if PEEL
layout(std430, binding = 2) readonly buffer PrevBuf { float prev_z[]; };
uniform int u_prev_base;  // first float of prev_z[] in the bound range
#endif
void main() {
  vec2 pix = gl_FragCoord.xy + vec2(u_origin);  // pixel center, full-image coordinates
  vec2 res = vec2(u_res);
  float X = 2.0 * pix.x / res.x - 1.0;
  float Y = 2.0 * pix.y / res.y - 1.0;
  vec2 q0 = g_p0.xy - vec2(X, Y) * g_p0.w;
  vec2 q1 = g_p1.xy - vec2(X, Y) * g_p1.w;
  vec2 q2 = g_p2.xy - vec2(X, Y) * g_p2.w;
  float a0 = q1.x * q2.y - q1.y * q2.x;
  float a1 = q2.x * q0.y - q2.y * q0.x;
  float a2 = q0.x * q1.y - q0.y * q1.x;
  float s = a0 + a1 + a2;
  float inv_s = 1.0 / s;
  float bu = a0 * inv_s;
  float bv = a1 * inv_s;
  float d = (a0 * g_p0.z + a1 * g_p1.z + a2 * g_p2.z) / (a0 * g_p0.w + a1 * g_p1.w + a2 * g_p2.w);
  d = clamp(d, -1.0, 1.0);
#if PEEL
  uint pidx = (uint(g_img) * uint(u_res.y) + uint(pix.y)) * uint(u_res.x) + uint(pix.x);
  if (d <= prev_z[pidx - uint(u_prev_base)]) discard;
#endif
  float u = clamp(bu, 0.0, 1.0);
  float v = clamp(bv, 0.0, 1.0);
  float uv = u + v;
  if (uv > 1.0) { u /= uv; v /= uv; }
  uint k = uint(g_tid) + 1u;
  float id = k <= 16777216u ? float(k) : uintBitsToFloat(0x4A800000u + k);
  o_rast = vec4(u, v, d, id);
#if OUTPUT_DB
  // dA_i/dX and dA_i/dY are constant per triangle (spec 4.1); derivatives use unclamped u, v.
  float a0x = g_p2.w * g_p1.y - g_p1.w * g_p2.y, a0y = g_p1.w * g_p2.x - g_p2.w * g_p1.x;
  float a1x = g_p0.w * g_p2.y - g_p2.w * g_p0.y, a1y = g_p2.w * g_p0.x - g_p0.w * g_p2.x;
  float a2x = g_p1.w * g_p0.y - g_p0.w * g_p1.y, a2y = g_p0.w * g_p1.x - g_p1.w * g_p0.x;
  float sx = a0x + a1x + a2x, sy = a0y + a1y + a2y;
  float kx = 2.0 / res.x * inv_s, ky = 2.0 / res.y * inv_s;
  o_db = vec4((a0x - bu * sx) * kx, (a0y - bu * sy) * ky, (a1x - bv * sx) * kx, (a1y - bv * sy) * ky);
#endif
}
)";

const char* gl_error_name(GLenum e) {
  switch (e) {
    case GL_INVALID_ENUM: return "GL_INVALID_ENUM";
    case GL_INVALID_VALUE: return "GL_INVALID_VALUE";
    case GL_INVALID_OPERATION: return "GL_INVALID_OPERATION";
    case GL_OUT_OF_MEMORY: return "GL_OUT_OF_MEMORY";
    case GL_INVALID_FRAMEBUFFER_OPERATION: return "GL_INVALID_FRAMEBUFFER_OPERATION";
    default: return "unknown GL error";
  }
}

int round_up32(int x) { return (x + 31) & ~31; }

}  // namespace

Rasterizer::Rasterizer(const PlatformContext& ctx, bool output_db) : output_db_(output_db) {
  trace("loading GL entry points");
  std::string missing;
#define NVDR_GL_LOAD(ret, name, args)                                                     \
  gl_.name = reinterpret_cast<ret(NVDR_GLAPI*) args>(ctx.get_proc(#name));               \
  if (!gl_.name) missing += std::string(missing.empty() ? "" : ", ") + #name;
  NVDR_GL_FUNCTIONS(NVDR_GL_LOAD)
#undef NVDR_GL_LOAD
  if (!missing.empty())
    throw GLError("RasterizeGLContext: the OpenGL driver lacks entry points required by OpenGL 4.3: " + missing);
  auto str = [&](GLenum e) {
    const GLubyte* s = gl_.glGetString(e);
    return std::string(s ? reinterpret_cast<const char*>(s) : "?");
  };
  version_ = str(GL_VERSION);
  renderer_ = str(GL_RENDERER);
  vendor_ = str(GL_VENDOR);
  platform_ = ctx.description();
  int ma = 0, mi = 0;
  if (!parse_gl_version(version_.c_str(), &ma, &mi) || ma * 10 + mi < kRequiredMajor * 10 + kRequiredMinor)
    throw GLError("RasterizeGLContext: OpenGL 4.3 or later is required, the driver reports '" + version_ + "' on '" +
                  renderer_ + "'");

  trace("querying limits of " + renderer_);
  GLint vp[2] = {0, 0}, tex = 0, fbw = 0, fbh = 0, fbl = 0, layers = 0, ssbo = 0, vs_blocks = 0, fs_blocks = 0,
        align = 0;
  gl_.glGetIntegerv(GL_SHADER_STORAGE_BUFFER_OFFSET_ALIGNMENT, &align);
  gl_.glGetIntegerv(GL_MAX_VIEWPORT_DIMS, vp);
  gl_.glGetIntegerv(GL_MAX_TEXTURE_SIZE, &tex);
  gl_.glGetIntegerv(GL_MAX_FRAMEBUFFER_WIDTH, &fbw);
  gl_.glGetIntegerv(GL_MAX_FRAMEBUFFER_HEIGHT, &fbh);
  gl_.glGetIntegerv(GL_MAX_FRAMEBUFFER_LAYERS, &fbl);
  gl_.glGetIntegerv(GL_MAX_ARRAY_TEXTURE_LAYERS, &layers);
  gl_.glGetIntegerv(GL_MAX_SHADER_STORAGE_BLOCK_SIZE, &ssbo);
  gl_.glGetIntegerv(GL_MAX_VERTEX_SHADER_STORAGE_BLOCKS, &vs_blocks);
  gl_.glGetIntegerv(GL_MAX_FRAGMENT_SHADER_STORAGE_BLOCKS, &fs_blocks);
  check("querying limits");
  if (vs_blocks < 2 || fs_blocks < 1)
    throw GLError("RasterizeGLContext: the OpenGL driver '" + renderer_ +
                  "' does not offer shader storage buffers in vertex/fragment shaders (" + std::to_string(vs_blocks) +
                  "/" + std::to_string(fs_blocks) + "), which this rasterizer needs");
  // Tiles are rounded up to 32 when allocated, so keep the limit a multiple of 32.
  max_tile_w_ = std::max(32, std::min({vp[0], tex, fbw}) & ~31);
  max_tile_h_ = std::max(32, std::min({vp[1], tex, fbh}) & ~31);
  max_layers_ = std::max(1, std::min(fbl, layers));
  max_ssbo_ = ssbo < 0 ? (1LL << 31) - 1 : ssbo;
  // Range offsets are rounded down to the alignment; keeping it a multiple of 16 keeps vec4 indexing exact.
  ssbo_align_ = std::max(16, align);
  if (ssbo_align_ % 16 != 0) ssbo_align_ = (ssbo_align_ / 16 + 1) * 16;
  if (max_ssbo_ < 4 * ssbo_align_ + 64)
    throw GLError("RasterizeGLContext: the OpenGL driver's shader storage block size limit (" +
                  std::to_string(max_ssbo_) + " bytes) is too small");

  trace("compiling shaders");
  prog_[0] = build_program(false, output_db_);
  prog_[1] = build_program(true, output_db_);
  const char* names[kNumUniforms] = {"u_num_verts", "u_instanced", "u_xform",    "u_layer_base",
                                     "u_res",       "u_origin",    "u_tri_base", "u_pos_base", "u_prev_base"};
  for (int p = 0; p < 2; ++p)
    for (int i = 0; i < kNumUniforms; ++i) loc_[p][i] = gl_.glGetUniformLocation(prog_[p], names[i]);
  trace("creating buffers and framebuffers");

  gl_.glGenVertexArrays(1, &vao_);
  gl_.glGenFramebuffers(1, &fbo_draw_);
  gl_.glGenFramebuffers(1, &fbo_read_);
  gl_.glGenBuffers(1, &image_index_);
  gl_.glGenBuffers(1, &indirect_);
  check("creating objects");
  trace("rasterizer ready: " + info());
}

Rasterizer::~Rasterizer() {
  if (abandoned_) return;
  for (unsigned int& b : buf_)
    if (b) gl_.glDeleteBuffers(1, &b);
  for (unsigned int p : prog_)
    if (p) gl_.glDeleteProgram(p);
  unsigned int texs[3] = {tex_rast_, tex_db_, tex_depth_};
  for (unsigned int t : texs)
    if (t) gl_.glDeleteTextures(1, &t);
  if (fbo_draw_) gl_.glDeleteFramebuffers(1, &fbo_draw_);
  if (fbo_read_) gl_.glDeleteFramebuffers(1, &fbo_read_);
  if (image_index_) gl_.glDeleteBuffers(1, &image_index_);
  if (indirect_) gl_.glDeleteBuffers(1, &indirect_);
  if (vao_) gl_.glDeleteVertexArrays(1, &vao_);
  gl_.glGetError();  // nothing to report from a destructor
}

std::string Rasterizer::info() const {
  // No iostreams in this module: with the NVIDIA GL driver loaded, ostream number formatting crashed
  // inside libstdc++'s locale code (seen on an H200, driver 580); plain string building is safe.
  return "OpenGL " + version_ + " | " + renderer_ + " | " + vendor_ + " | " + platform_ + " | max tile " +
         std::to_string(max_tile_w_) + "x" + std::to_string(max_tile_h_) + ", " + std::to_string(max_layers_) +
         " layers, storage blocks up to " + std::to_string(max_ssbo_) + " bytes";
}

void Rasterizer::set_limits(int max_tile, int max_layers, long long max_storage_bytes) {
  user_tile_ = std::max(0, max_tile);
  user_layers_ = std::max(0, max_layers);
  user_ssbo_ = std::max(0LL, max_storage_bytes);
}

void Rasterizer::check(const char* where) {
  GLenum e = gl_.glGetError();
  if (e == GL_NO_ERROR) return;
  while (gl_.glGetError() != GL_NO_ERROR) {
  }
  std::string hint = e == GL_OUT_OF_MEMORY ? " (the GL driver ran out of memory: use smaller batches/resolutions)" : "";
  throw GLError(std::string("RasterizeGLContext: OpenGL error ") + gl_error_name(e) + " while " + where + hint);
}

unsigned int Rasterizer::build_program(bool peel, bool db) {
  std::string header = std::string("#version 430 core\n#define PEEL ") + (peel ? "1" : "0") + "\n#define OUTPUT_DB " +
                       (db ? "1" : "0") + "\n";
  const char* sources[3] = {kVertexShader, kGeometryShader, kFragmentShader};
  const GLenum types[3] = {GL_VERTEX_SHADER, GL_GEOMETRY_SHADER, GL_FRAGMENT_SHADER};
  const char* kinds[3] = {"vertex", "geometry", "fragment"};
  const std::string variant = std::string(" (peel=") + (peel ? "1" : "0") + ", db=" + (db ? "1" : "0") + ")";
  GLuint prog = gl_.glCreateProgram();
  GLuint shaders[3] = {0, 0, 0};
  std::string err;
  for (int i = 0; i < 3 && err.empty(); ++i) {
    trace(std::string("compiling the ") + kinds[i] + " shader" + variant);
    shaders[i] = gl_.glCreateShader(types[i]);
    if (!shaders[i]) {
      err = std::string("glCreateShader(") + kinds[i] + ") failed";
      break;
    }
    const char* parts[2] = {header.c_str(), sources[i]};
    const GLint lengths[2] = {static_cast<GLint>(header.size()), static_cast<GLint>(std::char_traits<char>::length(sources[i]))};
    gl_.glShaderSource(shaders[i], 2, parts, lengths);
    gl_.glCompileShader(shaders[i]);
    GLint ok = 0;
    gl_.glGetShaderiv(shaders[i], GL_COMPILE_STATUS, &ok);
    if (!ok) {
      char log[4096] = {0};
      GLsizei len = 0;  // some drivers write the length even when the spec allows null
      gl_.glGetShaderInfoLog(shaders[i], sizeof(log) - 1, &len, log);
      err = std::string("compiling the ") + kinds[i] + " shader failed: " + log;
    } else {
      gl_.glAttachShader(prog, shaders[i]);
    }
  }
  if (err.empty()) {
    trace("linking the shader program" + variant);
    gl_.glLinkProgram(prog);
    GLint ok = 0;
    gl_.glGetProgramiv(prog, GL_LINK_STATUS, &ok);
    if (!ok) {
      char log[4096] = {0};
      GLsizei len = 0;
      gl_.glGetProgramInfoLog(prog, sizeof(log) - 1, &len, log);
      err = std::string("linking the shader program failed: ") + log;
    }
  }
  for (GLuint sh : shaders)
    if (sh) gl_.glDeleteShader(sh);
  if (!err.empty()) {
    gl_.glDeleteProgram(prog);
    throw GLError("RasterizeGLContext: " + err + " (driver '" + renderer_ + "', OpenGL '" + version_ + "')");
  }
  check("building shaders");
  return prog;
}

bool Rasterizer::reserve(Buf b, std::size_t bytes) {
  const int i = static_cast<int>(b);
  if (bytes <= cap_[i] && buf_[i]) return false;
  std::size_t cap = std::max<std::size_t>({bytes, cap_[i] + cap_[i] / 2, 256});
  if (buf_[i]) gl_.glDeleteBuffers(1, &buf_[i]);
  buf_[i] = 0;
  cap_[i] = 0;
  gl_.glGenBuffers(1, &buf_[i]);
  gl_.glBindBuffer(GL_ARRAY_BUFFER, buf_[i]);
  gl_.glBufferData(GL_ARRAY_BUFFER, static_cast<GLsizeiptr>(cap), nullptr,
                   b == Buf::Out ? GL_STREAM_READ : GL_DYNAMIC_DRAW);
  gl_.glBindBuffer(GL_ARRAY_BUFFER, 0);
  check("allocating a buffer");
  cap_[i] = cap;
  return true;
}

void Rasterizer::upload(Buf b, const void* data, std::size_t bytes) {
  const int i = static_cast<int>(b);
  reserve(b, bytes);
  gl_.glBindBuffer(GL_ARRAY_BUFFER, buf_[i]);
  gl_.glBufferSubData(GL_ARRAY_BUFFER, 0, static_cast<GLsizeiptr>(bytes), data);
  gl_.glBindBuffer(GL_ARRAY_BUFFER, 0);
  check("uploading input data");
}

std::size_t Rasterizer::output_bytes(const RasterJob& job) const {
  std::size_t one = std::size_t(job.n) * job.h * job.w * 4 * sizeof(float);
  return output_db_ ? 2 * one : one;
}

void Rasterizer::ensure_framebuffer(int w, int h, int layers) {
  w = round_up32(w);
  h = round_up32(h);
  if (w <= fb_w_ && h <= fb_h_ && layers <= fb_layers_) return;
  w = std::max(w, fb_w_);
  h = std::max(h, fb_h_);
  layers = std::max(layers, fb_layers_);
  unsigned int old[3] = {tex_rast_, tex_db_, tex_depth_};
  for (unsigned int t : old)
    if (t) gl_.glDeleteTextures(1, &t);
  tex_rast_ = tex_db_ = tex_depth_ = 0;
  fb_w_ = fb_h_ = fb_layers_ = 0;
  auto make = [&](GLenum fmt) {
    GLuint t = 0;
    gl_.glGenTextures(1, &t);
    gl_.glBindTexture(GL_TEXTURE_2D_ARRAY, t);
    gl_.glTexStorage3D(GL_TEXTURE_2D_ARRAY, 1, fmt, w, h, layers);
    gl_.glTexParameteri(GL_TEXTURE_2D_ARRAY, GL_TEXTURE_MIN_FILTER, GL_NEAREST);
    gl_.glTexParameteri(GL_TEXTURE_2D_ARRAY, GL_TEXTURE_MAG_FILTER, GL_NEAREST);
    return t;
  };
  tex_rast_ = make(GL_RGBA32F);
  if (output_db_) tex_db_ = make(GL_RGBA32F);
  tex_depth_ = make(GL_DEPTH_COMPONENT32F);
  gl_.glBindTexture(GL_TEXTURE_2D_ARRAY, 0);
  check("allocating the framebuffer");
  gl_.glBindFramebuffer(GL_DRAW_FRAMEBUFFER, fbo_draw_);
  gl_.glFramebufferTexture(GL_DRAW_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, tex_rast_, 0);
  gl_.glFramebufferTexture(GL_DRAW_FRAMEBUFFER, GL_COLOR_ATTACHMENT1, tex_db_, 0);
  gl_.glFramebufferTexture(GL_DRAW_FRAMEBUFFER, GL_DEPTH_ATTACHMENT, tex_depth_, 0);
  const GLenum bufs[2] = {GL_COLOR_ATTACHMENT0, GL_COLOR_ATTACHMENT1};
  gl_.glDrawBuffers(output_db_ ? 2 : 1, bufs);
  GLenum st = gl_.glCheckFramebufferStatus(GL_DRAW_FRAMEBUFFER);
  check("attaching the framebuffer");
  if (st != GL_FRAMEBUFFER_COMPLETE) {
    char status[16];
    std::snprintf(status, sizeof(status), "0x%x", static_cast<unsigned>(st));
    throw GLError("RasterizeGLContext: the layered framebuffer (" + std::to_string(w) + "x" + std::to_string(h) +
                  "x" + std::to_string(layers) + ") is incomplete, status " + status);
  }
  fb_w_ = w;
  fb_h_ = h;
  fb_layers_ = layers;
}

void Rasterizer::ensure_image_index(int n) {
  if (n <= image_index_n_) return;
  int cap = std::max(n, image_index_n_ * 2);
  std::vector<GLint> idx(cap);
  for (int i = 0; i < cap; ++i) idx[i] = i;
  gl_.glBindVertexArray(vao_);
  gl_.glBindBuffer(GL_ARRAY_BUFFER, image_index_);
  gl_.glBufferData(GL_ARRAY_BUFFER, static_cast<GLsizeiptr>(cap * sizeof(GLint)), idx.data(), GL_DYNAMIC_DRAW);
  gl_.glEnableVertexAttribArray(0);
  gl_.glVertexAttribIPointer(0, 1, GL_INT, 0, nullptr);
  gl_.glVertexAttribDivisor(0, 1);
  gl_.glBindBuffer(GL_ARRAY_BUFFER, 0);
  check("building the image index buffer");
  image_index_n_ = cap;
}

void Rasterizer::render(const RasterJob& job, float* host_rast, float* host_db) {
  if (job.n <= 0 || job.h <= 0 || job.w <= 0 || job.v <= 0 || job.t <= 0)
    throw GLError("RasterizeGLContext: empty rasterization job");
  if (!job.instanced && !job.ranges) throw GLError("RasterizeGLContext: range mode needs ranges");
  const std::size_t pos_bytes = std::size_t(job.instanced ? job.n : 1) * job.v * 16;
  const std::size_t tri_bytes = std::size_t(job.t) * 12;
  const std::size_t prev_bytes = std::size_t(job.n) * job.h * job.w * 4;
  if (cap_[int(Buf::Pos)] < pos_bytes || cap_[int(Buf::Tri)] < tri_bytes || (job.peel && cap_[int(Buf::Prev)] < prev_bytes))
    throw GLError("RasterizeGLContext: internal error: input buffers were not filled");
  const bool to_pbo = host_rast == nullptr;
  if (to_pbo && cap_[int(Buf::Out)] < output_bytes(job))
    throw GLError("RasterizeGLContext: internal error: output buffer too small");
  if (3LL * job.t > 2147483647LL) throw GLError("RasterizeGLContext: too many triangles for one draw (3*T > 2^31-1)");
  if (std::size_t(job.n) * job.v >= (std::size_t(1) << 31))
    throw GLError("RasterizeGLContext: too many vertices in pos (N*V must be below 2^31)");

  // Shader storage blocks are bound as ranges no larger than the driver's block size limit: pos and
  // the previous depth layer per group of images, tri per chunk of triangles.
  const long long storage = user_ssbo_ > 0 ? std::min(max_ssbo_, std::max(user_ssbo_, 4 * ssbo_align_)) : max_ssbo_;
  const long long usable = storage - ssbo_align_;
  const std::size_t image_pos_bytes = std::size_t(job.v) * 16;
  const std::size_t image_prev_bytes = std::size_t(job.h) * job.w * 4;
  auto too_big = [&](std::size_t bytes, const std::string& what) {
    return GLError("RasterizeGLContext: " + what + " needs " + std::to_string(bytes) +
                   " bytes in one shader storage block, above this driver's limit of " + std::to_string(storage) +
                   " bytes (GL_MAX_SHADER_STORAGE_BLOCK_SIZE); use fewer vertices / a smaller resolution, or "
                   "RasterizeCudaContext");
  };
  if (static_cast<long long>(job.instanced ? image_pos_bytes : pos_bytes) > usable)
    throw too_big(job.instanced ? image_pos_bytes : pos_bytes, job.instanced ? "one image's vertices" : "pos");
  if (job.peel && static_cast<long long>(image_prev_bytes) > usable)
    throw too_big(image_prev_bytes, "the previous depth layer of one image");
  const long long tri_chunk = std::max<long long>(1, usable / 12);

  int tile_w = max_tile_w_, tile_h = max_tile_h_;
  if (user_tile_ > 0) {
    tile_w = std::min(tile_w, user_tile_);
    tile_h = std::min(tile_h, user_tile_);
  }
  tile_w = std::min(tile_w, job.w);
  tile_h = std::min(tile_h, job.h);
  const std::size_t per_layer = std::size_t(round_up32(tile_w)) * round_up32(tile_h) * (output_db_ ? 36 : 20);
  long long layers = std::min<long long>(job.n, std::max<std::size_t>(1, kLayerBudgetBytes / per_layer));
  layers = std::min<long long>(layers, max_layers_);
  if (job.instanced) layers = std::min<long long>(layers, usable / static_cast<long long>(image_pos_bytes));
  if (job.peel) layers = std::min<long long>(layers, usable / static_cast<long long>(image_prev_bytes));
  if (user_layers_ > 0) layers = std::min<long long>(layers, user_layers_);
  layers = std::max<long long>(layers, 1);

  ensure_framebuffer(tile_w, tile_h, static_cast<int>(layers));
  ensure_image_index(job.n);

  // Fixed-function state: we own the context, but a user may have shared it in manual mode.
  gl_.glDisable(GL_CULL_FACE);
  gl_.glDisable(GL_BLEND);
  gl_.glDisable(GL_DITHER);
  gl_.glDisable(GL_SCISSOR_TEST);
  gl_.glDisable(GL_DEPTH_CLAMP);
  gl_.glDisable(GL_MULTISAMPLE);
  gl_.glDisable(GL_FRAMEBUFFER_SRGB);
  gl_.glDisable(GL_RASTERIZER_DISCARD);
  gl_.glDisable(GL_PRIMITIVE_RESTART);
  gl_.glDisable(GL_PRIMITIVE_RESTART_FIXED_INDEX);
  gl_.glDisable(GL_POLYGON_OFFSET_FILL);
  gl_.glEnable(GL_DEPTH_TEST);
  gl_.glDepthFunc(GL_LESS);
  gl_.glDepthMask(GL_TRUE);
  gl_.glColorMaski(0, GL_TRUE, GL_TRUE, GL_TRUE, GL_TRUE);
  gl_.glColorMaski(1, GL_TRUE, GL_TRUE, GL_TRUE, GL_TRUE);

  const int p = job.peel ? 1 : 0;
  const GLint* loc = loc_[p];
  gl_.glUseProgram(prog_[p]);
  gl_.glUniform1i(loc[0], job.v);
  gl_.glUniform1i(loc[1], job.instanced ? 1 : 0);
  gl_.glUniform2i(loc[4], job.w, job.h);
  gl_.glBindVertexArray(vao_);
  // Binds [start, start+bytes) of buffer b rounded down to the alignment; returns the first element.
  auto bind_range = [&](GLuint index, Buf b, std::size_t start, std::size_t bytes, std::size_t elem) {
    const std::size_t off = start / ssbo_align_ * ssbo_align_;
    gl_.glBindBufferRange(GL_SHADER_STORAGE_BUFFER, index, buf_[int(b)], static_cast<GLintptr>(off),
                          static_cast<GLsizeiptr>(start + bytes - off));
    return static_cast<GLint>(off / elem);
  };
  if (!job.instanced) gl_.glUniform1i(loc[7], bind_range(0, Buf::Pos, 0, pos_bytes, 16));
  gl_.glBindFramebuffer(GL_DRAW_FRAMEBUFFER, fbo_draw_);
  gl_.glBindFramebuffer(GL_READ_FRAMEBUFFER, fbo_read_);
  gl_.glPixelStorei(GL_PACK_ALIGNMENT, 4);
  gl_.glPixelStorei(GL_PACK_ROW_LENGTH, job.w);
  gl_.glPixelStorei(GL_PACK_SKIP_PIXELS, 0);
  gl_.glPixelStorei(GL_PACK_SKIP_ROWS, 0);
  gl_.glBindBuffer(GL_PIXEL_PACK_BUFFER, to_pbo ? buf_[int(Buf::Out)] : 0);
  gl_.glBindBuffer(GL_DRAW_INDIRECT_BUFFER, indirect_);
  check("setting up the draw");

  const std::size_t plane = std::size_t(job.n) * job.h * job.w * 4;  // floats per output
  const float zero[4] = {0.f, 0.f, 0.f, 0.f};
  const float one = 1.f;
  struct Cmd {
    GLuint count, instance_count, first, base_instance;
  };
  struct Draw {  // one chunk of triangles for the current group of images
    long long t0, t1;
    std::size_t cmd_offset, cmd_count;
  };
  std::vector<Cmd> cmds;
  std::vector<Draw> draws;

  for (int l0 = 0; l0 < job.n; l0 += static_cast<int>(layers)) {
    const int lc = static_cast<int>(std::min<long long>(layers, job.n - l0));
    gl_.glUniform1i(loc[3], l0);
    if (job.instanced)
      gl_.glUniform1i(loc[7], bind_range(0, Buf::Pos, std::size_t(l0) * image_pos_bytes, lc * image_pos_bytes, 16));
    if (job.peel)
      gl_.glUniform1i(loc[8], bind_range(2, Buf::Prev, std::size_t(l0) * image_prev_bytes, lc * image_prev_bytes, 4));
    // Triangle chunks and, in range mode, the per-image draw commands that fall in each chunk.
    cmds.clear();
    draws.clear();
    for (long long t0 = 0; t0 < job.t; t0 += tri_chunk) {
      const long long t1 = std::min<long long>(job.t, t0 + tri_chunk);
      Draw d{t0, t1, cmds.size(), 0};
      if (!job.instanced) {
        for (int i = l0; i < l0 + lc; ++i) {
          const long long first = std::max<long long>({static_cast<long long>(job.ranges[2 * i]), t0, 0});
          const long long end =
              std::min<long long>(static_cast<long long>(job.ranges[2 * i]) + job.ranges[2 * i + 1], t1);
          if (end <= first) continue;  // triangles outside [0, T) are skipped
          cmds.push_back({GLuint(3 * (end - first)), 1u, GLuint(3 * first), GLuint(i)});
        }
        d.cmd_count = cmds.size() - d.cmd_offset;
        if (d.cmd_count == 0) continue;
      }
      draws.push_back(d);
    }
    if (!cmds.empty()) {
      const std::size_t bytes = cmds.size() * sizeof(Cmd);
      if (bytes > indirect_cap_) {
        indirect_cap_ = std::max(bytes, 2 * indirect_cap_);
        gl_.glBufferData(GL_DRAW_INDIRECT_BUFFER, static_cast<GLsizeiptr>(indirect_cap_), nullptr, GL_DYNAMIC_DRAW);
      }
      gl_.glBufferSubData(GL_DRAW_INDIRECT_BUFFER, 0, static_cast<GLsizeiptr>(bytes), cmds.data());
    }
    for (int y0 = 0; y0 < job.h; y0 += tile_h) {
      for (int x0 = 0; x0 < job.w; x0 += tile_w) {
        const int tw = std::min(tile_w, job.w - x0), th = std::min(tile_h, job.h - y0);
        gl_.glViewport(0, 0, tw, th);
        gl_.glClearBufferfv(GL_COLOR, 0, zero);
        if (output_db_) gl_.glClearBufferfv(GL_COLOR, 1, zero);
        gl_.glClearBufferfv(GL_DEPTH, 0, &one);
        // Full-image NDC -> tile NDC: x_t = x * W/tw + (W - 2*x0 - tw)/tw (times w in clip space).
        const double sx = double(job.w) / tw, sy = double(job.h) / th;
        const double ox = double(job.w - 2 * x0 - tw) / tw, oy = double(job.h - 2 * y0 - th) / th;
        gl_.glUniform4f(loc[2], float(sx), float(sy), float(ox), float(oy));
        gl_.glUniform2i(loc[5], x0, y0);
        for (const Draw& d : draws) {
          gl_.glUniform1i(loc[6], bind_range(1, Buf::Tri, std::size_t(d.t0) * 12, std::size_t(d.t1 - d.t0) * 12, 4));
          if (job.instanced)
            gl_.glDrawArraysInstancedBaseInstance(GL_TRIANGLES, static_cast<GLint>(3 * d.t0),
                                                  static_cast<GLsizei>(3 * (d.t1 - d.t0)), lc, GLuint(l0));
          else
            gl_.glMultiDrawArraysIndirect(GL_TRIANGLES, reinterpret_cast<const void*>(d.cmd_offset * sizeof(Cmd)),
                                          static_cast<GLsizei>(d.cmd_count), 0);
        }
        check("drawing");
        for (int l = 0; l < lc; ++l) {
          const std::size_t off = ((std::size_t(l0 + l) * job.h + y0) * job.w + x0) * 4;  // floats
          for (int o = 0; o < (output_db_ ? 2 : 1); ++o) {
            gl_.glFramebufferTextureLayer(GL_READ_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, o ? tex_db_ : tex_rast_, 0, l);
            gl_.glReadBuffer(GL_COLOR_ATTACHMENT0);
            void* dst;
            if (to_pbo)
              dst = reinterpret_cast<void*>((off + (o ? plane : 0)) * sizeof(float));
            else
              dst = (o ? host_db : host_rast) + off;
            gl_.glReadPixels(0, 0, tw, th, GL_RGBA, GL_FLOAT, dst);
          }
        }
        check("reading back the results");
      }
    }
  }
  gl_.glBindBuffer(GL_PIXEL_PACK_BUFFER, 0);
  gl_.glBindBuffer(GL_DRAW_INDIRECT_BUFFER, 0);
  gl_.glPixelStorei(GL_PACK_ROW_LENGTH, 0);
  gl_.glBindVertexArray(0);
  gl_.glUseProgram(0);
  gl_.glBindFramebuffer(GL_DRAW_FRAMEBUFFER, 0);
  gl_.glBindFramebuffer(GL_READ_FRAMEBUFFER, 0);
  check("finishing the draw");
}

}  // namespace nvdr_gl
