// The OpenGL rasterizer proper: shaders, buffers, layered framebuffer, tiling and readback. It is
// independent of torch and CUDA (the torch layer, gl_torch.cpp, adds tensors and CUDA-GL interop),
// so it also compiles with mingw-w64 in CI. Every method needs the context current on the thread.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "gl/gl_api.h"
#include "gl/platform.h"

namespace nvdr_gl {

// GL buffers the caller may fill: from host memory (upload) or, with CUDA interop, by registering
// buffer_name() with CUDA. Out receives the results when no host destination is given.
enum class Buf : int { Pos = 0, Tri = 1, Prev = 2, Out = 3, Count = 4 };

struct RasterJob {
  int n = 0;               // images
  int v = 0;               // vertices per image (instanced) or in total (range mode)
  int t = 0;               // triangles in tri
  int h = 0, w = 0;        // output resolution
  bool instanced = true;   // pos is [n, v, 4]; else [v, 4] with ranges
  const std::int32_t* ranges = nullptr;  // range mode: host [n, 2] of (first, count)
  bool peel = false;       // Buf::Prev holds [n, h, w] floats: discard fragments with depth <= it
};

class Rasterizer {
 public:
  // Loads the GL entry points from `ctx` (current on this thread), checks limits, builds shaders.
  Rasterizer(const PlatformContext& ctx, bool output_db);
  ~Rasterizer();
  Rasterizer(const Rasterizer&) = delete;
  Rasterizer& operator=(const Rasterizer&) = delete;

  // Call before destruction when the context cannot be made current: GL objects then die with it.
  void abandon() { abandoned_ = true; }

  std::string info() const;
  bool output_db() const { return output_db_; }
  // Test hook: caps the tile size, the images rendered per pass and the bytes bound per shader
  // storage block (0 = driver/memory limits), so that the splitting paths run on small inputs.
  void set_limits(int max_tile, int max_layers, long long max_storage_bytes);

  std::size_t capacity(Buf b) const { return cap_[static_cast<int>(b)]; }
  // Grows buffer b to at least `bytes` (contents are lost). Returns true if the GL name changed,
  // which invalidates any CUDA registration of the old buffer (unregister it first).
  bool reserve(Buf b, std::size_t bytes);
  unsigned int buffer_name(Buf b) const { return buf_[static_cast<int>(b)]; }
  void upload(Buf b, const void* data, std::size_t bytes);

  // Bytes Buf::Out needs for a job: rast then (when output_db) rast_db, both [n, h, w, 4] float.
  std::size_t output_bytes(const RasterJob& job) const;
  // Renders the job. host_rast/host_db: destinations in host memory ([n,h,w,4] float each), or
  // null to write into Buf::Out (rast at offset 0, rast_db right after it).
  void render(const RasterJob& job, float* host_rast, float* host_db);

 private:
  void check(const char* where);
  unsigned int build_program(bool peel, bool db);
  void ensure_framebuffer(int w, int h, int layers);
  void ensure_image_index(int n);

  GLFunctions gl_;
  bool output_db_;
  bool abandoned_ = false;
  std::string version_, renderer_, vendor_, platform_;
  int max_tile_w_ = 0, max_tile_h_ = 0, max_layers_ = 0;
  long long max_ssbo_ = 0;
  long long ssbo_align_ = 16;
  int user_tile_ = 0, user_layers_ = 0;
  long long user_ssbo_ = 0;
  static constexpr int kNumUniforms = 9;
  unsigned int prog_[2] = {0, 0};  // [peel]
  GLint loc_[2][kNumUniforms] = {};
  unsigned int vao_ = 0, fbo_draw_ = 0, fbo_read_ = 0;
  unsigned int tex_rast_ = 0, tex_db_ = 0, tex_depth_ = 0;
  int fb_w_ = 0, fb_h_ = 0, fb_layers_ = 0;
  unsigned int image_index_ = 0, indirect_ = 0;
  int image_index_n_ = 0;
  std::size_t indirect_cap_ = 0;
  unsigned int buf_[4] = {0, 0, 0, 0};
  std::size_t cap_[4] = {0, 0, 0, 0};
};

}  // namespace nvdr_gl
