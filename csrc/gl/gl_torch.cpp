// torch binding of the OpenGL rasterizer: the custom class torch.classes.nvdiffrast_gl.Context,
// and PyInit__gl for the module nvdiffrast._gl. CPU tensors go through host upload/readback; CUDA
// tensors through CUDA-GL interop (registered GL buffers, device-to-device copies on the current
// torch stream, no host round trip).
#include <Python.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <c10/util/Logging.h>
#include <cuda_runtime.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "gl/platform.h"
#include "gl/raster_gl.h"

// From cuda_gl_interop.h, declared here because that header includes the system GL headers,
// which a build machine need not have. GLuint/GLenum are unsigned int; the enum is an int.
extern "C" {
cudaError_t CUDARTAPI cudaGraphicsGLRegisterBuffer(cudaGraphicsResource** resource, unsigned int buffer,
                                                   unsigned int flags);
cudaError_t CUDARTAPI cudaGLGetDevices(unsigned int* count, int* devices, unsigned int capacity, int which);
}

namespace {

constexpr int kCudaGLDeviceListAll = 1;

// Error messages in this module are built as one std::string and handed to TORCH_CHECK whole:
// TORCH_CHECK with several arguments formats through an ostringstream compiled into this module,
// and that crashed inside libstdc++ once the NVIDIA GL driver was loaded (H200, driver 580.159).
[[noreturn]] void fail(const std::string& msg) { TORCH_CHECK(false, msg); }
#define NVDR_GL_REQUIRE(cond, msg) \
  do {                             \
    if (!(cond)) fail(msg);        \
  } while (0)

std::string device_name(const at::Tensor& t) {
  return t.is_cuda() ? "cuda:" + std::to_string(t.device().index()) : std::string(c10::DeviceTypeName(t.device().type(), true));
}

#define NVDR_GL_CUDA_CHECK(expr)                                                                          \
  do {                                                                                                    \
    cudaError_t nvdr_err_ = (expr);                                                                       \
    NVDR_GL_REQUIRE(nvdr_err_ == cudaSuccess, "Cuda error: " + std::to_string(static_cast<int>(nvdr_err_)) + \
                                                  " (" + cudaGetErrorString(nvdr_err_) + ") in " #expr);   \
  } while (0)

using nvdr_gl::Buf;

// Runs fn and turns GLError into a c10::Error (a Python RuntimeError).
template <typename F>
auto gl_call(F&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const nvdr_gl::GLError& e) {
    TORCH_CHECK(false, e.what());
  }
}

class Context : public torch::CustomClassHolder {
 public:
  Context(int64_t cuda_device, bool output_db, bool manual)
      : device_(static_cast<int>(cuda_device)), output_db_(output_db), manual_(manual) {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<c10::cuda::CUDAGuard> guard;
    if (device_ >= 0) {
      guard.emplace(static_cast<c10::DeviceIndex>(device_));
      NVDR_GL_CUDA_CHECK(cudaFree(nullptr));  // the CUDA context must exist before interop
    }
    gl_call([&] {
      nvdr_gl::PlatformOptions opt;
      opt.cuda_device = device_;
      plat_ = nvdr_gl::create_platform_context(opt);  // current on this thread from here on
      try {
        rast_ = std::make_unique<nvdr_gl::Rasterizer>(*plat_, output_db_);
        if (device_ >= 0) {
          nvdr_gl::trace("checking that the GL context is on cuda:" + std::to_string(device_));
          check_same_gpu();
        }
      } catch (...) {
        rast_.reset();
        plat_->release();
        throw;
      }
      plat_->release();
      return 0;
    });
    // Info-level log (spec: the GL path logs context creation). Plain stdio, not LOG()'s ostream:
    // ostream formatting in this module crashed with the NVIDIA GL driver loaded (H200, driver 580).
    if (FLAGS_caffe2_log_level <= 0)
      std::fprintf(stderr, "nvdiffrast: created OpenGL context: %s\n", rast_->info().c_str());
  }

  ~Context() override {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<c10::cuda::CUDAGuard> guard;  // unregistering needs this GPU current on this thread
    try {
      if (device_ >= 0) guard.emplace(static_cast<c10::DeviceIndex>(device_));
    } catch (...) {
      // CUDA may already be shutting down at interpreter exit; a destructor must not throw.
    }
    bool current = false;
    try {
      plat_->make_current();
      current = true;
    } catch (...) {
      // Current on another thread (manual mode): GL objects are freed with the context itself.
    }
    for (auto& r : res_) {
      if (r) cudaGraphicsUnregisterResource(r);
      r = nullptr;
    }
    if (!current) rast_->abandon();
    rast_.reset();
    if (current) {
      try {
        plat_->release();
      } catch (...) {
      }
    }
    plat_.reset();
  }

  void set_context() {
    TORCH_CHECK(manual_, "RasterizeGLContext.set_context() is only allowed in manual mode");
    gl_call([&] {
      plat_->make_current();
      return 0;
    });
  }

  void release_context() {
    TORCH_CHECK(manual_, "RasterizeGLContext.release_context() is only allowed in manual mode");
    gl_call([&] {
      plat_->release();
      return 0;
    });
  }

  bool is_current() const { return plat_->is_current(); }
  std::string info() const { return rast_->info(); }
  int64_t device() const { return device_; }

  void set_limits(int64_t max_tile, int64_t max_layers, int64_t max_storage_bytes) {
    rast_->set_limits(static_cast<int>(max_tile), static_cast<int>(max_layers), max_storage_bytes);
  }

  std::tuple<at::Tensor, at::Tensor> rasterize(const at::Tensor& pos, const at::Tensor& tri, int64_t height,
                                               int64_t width, const std::optional<at::Tensor>& ranges,
                                               const std::optional<at::Tensor>& prev_z) {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    if (manual_) {
      TORCH_CHECK(plat_->is_current(),
                  "RasterizeGLContext (mode='manual'): the OpenGL context is not current on this thread; call "
                  "set_context() on this thread first (and release_context() on the thread that set it before)");
    } else {
      lock.lock();  // automatic mode: concurrent callers take turns
      gl_call([&] {
        plat_->make_current();
        return 0;
      });
    }
    struct Release {
      nvdr_gl::PlatformContext* p;
      bool on;
      ~Release() {
        if (on) {
          try {
            p->release();
          } catch (...) {
          }
        }
      }
    } release{plat_.get(), !manual_};
    return run(pos, tri, height, width, ranges, prev_z);
  }

 private:
  void check_same_gpu() {
    unsigned int count = 0;
    int devs[16] = {0};
    cudaError_t e = cudaGLGetDevices(&count, devs, 16, kCudaGLDeviceListAll);
    if (e != cudaSuccess) {
      cudaGetLastError();
      throw nvdr_gl::GLError(std::string("RasterizeGLContext: the OpenGL context (") + rast_->info() +
                             ") is not usable with CUDA interop (cudaGLGetDevices: " + cudaGetErrorString(e) +
                             "). CUDA tensors need the NVIDIA OpenGL driver on the same GPU; use device='cpu' "
                             "for CPU tensors or RasterizeCudaContext.");
    }
    for (unsigned int i = 0; i < count && i < 16; ++i)
      if (devs[i] == device_) return;
    throw nvdr_gl::GLError("RasterizeGLContext: the OpenGL context was created on a different GPU than cuda:" +
                           std::to_string(device_) + " (" + rast_->info() +
                           "); check that the NVIDIA EGL driver exposes this GPU (EGL_NV_device_cuda)");
  }

  void check_tensor(const at::Tensor& t, const char* name, c10::ScalarType dtype) const {
    const char* dname = dtype == c10::kFloat ? "float32" : "int32";
    const std::string who = std::string("rasterize (OpenGL): ") + name;
    NVDR_GL_REQUIRE(t.scalar_type() == dtype,
                    who + " must be a " + dname + " tensor, got " + c10::toString(t.scalar_type()));
    NVDR_GL_REQUIRE(t.is_contiguous(), who + " must be a contiguous tensor");
    if (device_ >= 0) {
      NVDR_GL_REQUIRE(t.is_cuda() && t.device().index() == device_,
                      who + " must reside on cuda:" + std::to_string(device_) +
                          " (the device of this RasterizeGLContext), got " + device_name(t));
    } else {
      NVDR_GL_REQUIRE(t.is_cpu(), who + " must be a CPU tensor for a RasterizeGLContext created with device='cpu', got " +
                                      device_name(t));
    }
  }

  // Makes sure buffer b holds `bytes` and, for CUDA, is registered; returns its resource.
  cudaGraphicsResource* cuda_buffer(Buf b, std::size_t bytes, unsigned int flags) {
    cudaGraphicsResource*& r = res_[static_cast<int>(b)];
    if (rast_->capacity(b) < bytes || !r) {
      nvdr_gl::trace("registering GL buffer " + std::to_string(static_cast<int>(b)) + " with CUDA (" +
                     std::to_string(bytes) + " bytes)");
      if (r) NVDR_GL_CUDA_CHECK(cudaGraphicsUnregisterResource(r));
      r = nullptr;
      gl_call([&] { return rast_->reserve(b, bytes); });
      NVDR_GL_CUDA_CHECK(cudaGraphicsGLRegisterBuffer(&r, rast_->buffer_name(b), flags));
    }
    return r;
  }

  std::tuple<at::Tensor, at::Tensor> run(const at::Tensor& pos, const at::Tensor& tri, int64_t height,
                                         int64_t width, const std::optional<at::Tensor>& ranges,
                                         const std::optional<at::Tensor>& prev_z) {
    check_tensor(pos, "pos", c10::kFloat);
    check_tensor(tri, "tri", c10::kInt);
    const bool instanced = pos.dim() == 3;
    if (instanced) {
      TORCH_CHECK(pos.size(0) > 0 && pos.size(1) > 0 && pos.size(2) == 4,
                  "instance mode - pos must have shape [>0, >0, 4]");
    } else {
      TORCH_CHECK(pos.dim() == 2 && pos.size(0) > 0 && pos.size(1) == 4, "range mode - pos must have shape [>0, 4]");
    }
    TORCH_CHECK(tri.dim() == 2 && tri.size(0) > 0 && tri.size(1) == 3, "tri must have shape [>0, 3]");
    TORCH_CHECK(height > 0 && width > 0, "resolution must be [>0, >0]");
    TORCH_CHECK(height <= (1 << 30) && width <= (1 << 30), "resolution is too large for the OpenGL rasterizer");
    int64_t n = instanced ? pos.size(0) : 0;
    const int32_t* rptr = nullptr;
    if (!instanced) {
      TORCH_CHECK(ranges.has_value() && ranges->defined(), "range mode - ranges must have shape [>0, 2]");
      const at::Tensor& r = *ranges;
      TORCH_CHECK(r.is_cpu(), "rasterize (OpenGL): ranges must reside on CPU");
      TORCH_CHECK(r.scalar_type() == c10::kInt && r.is_contiguous(),
                  "rasterize (OpenGL): ranges must be a contiguous int32 tensor");
      TORCH_CHECK(r.dim() == 2 && r.size(0) > 0 && r.size(1) == 2, "range mode - ranges must have shape [>0, 2]");
      n = r.size(0);
      rptr = r.data_ptr<int32_t>();
    }
    const int64_t v = instanced ? pos.size(1) : pos.size(0);
    const int64_t t = tri.size(0);
    TORCH_CHECK(n <= INT32_MAX && v <= INT32_MAX && t <= INT32_MAX, "rasterize (OpenGL): input too large");
    const bool peel = prev_z.has_value() && prev_z->defined();
    if (peel) {
      check_tensor(*prev_z, "prev_z", c10::kFloat);
      NVDR_GL_REQUIRE(prev_z->dim() == 3 && prev_z->size(0) == n && prev_z->size(1) == height &&
                          prev_z->size(2) == width,
                      "rasterize (OpenGL): the previous depth layer must have shape [" + std::to_string(n) + ", " +
                          std::to_string(height) + ", " + std::to_string(width) + "]");
    }

    nvdr_gl::RasterJob job;
    job.n = static_cast<int>(n);
    job.v = static_cast<int>(v);
    job.t = static_cast<int>(t);
    job.h = static_cast<int>(height);
    job.w = static_cast<int>(width);
    job.instanced = instanced;
    job.ranges = rptr;
    job.peel = peel;

    at::Tensor rast = at::empty({n, height, width, 4}, pos.options());
    at::Tensor db = at::empty({n, height, width, output_db_ ? 4 : 0}, pos.options());
    const std::size_t pos_bytes = pos.numel() * sizeof(float);
    const std::size_t tri_bytes = tri.numel() * sizeof(int32_t);

    if (device_ < 0) {
      gl_call([&] {
        rast_->upload(Buf::Pos, pos.data_ptr(), pos_bytes);
        rast_->upload(Buf::Tri, tri.data_ptr(), tri_bytes);
        if (peel) rast_->upload(Buf::Prev, prev_z->data_ptr(), prev_z->numel() * sizeof(float));
        rast_->render(job, rast.data_ptr<float>(), output_db_ ? db.data_ptr<float>() : nullptr);
        return 0;
      });
      return {rast, db};
    }

    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_)).stream();
    constexpr unsigned int kWriteDiscard = 2, kReadOnly = 1;  // cudaGraphicsRegisterFlags*
    cudaGraphicsResource* in[3] = {cuda_buffer(Buf::Pos, pos_bytes, kWriteDiscard),
                                   cuda_buffer(Buf::Tri, tri_bytes, kWriteDiscard), nullptr};
    const std::size_t prev_bytes = peel ? prev_z->numel() * sizeof(float) : 0;
    if (peel) in[2] = cuda_buffer(Buf::Prev, prev_bytes, kWriteDiscard);
    const std::size_t out_bytes = rast_->output_bytes(job);
    cudaGraphicsResource* out = cuda_buffer(Buf::Out, out_bytes, kReadOnly);

    const int nin = peel ? 3 : 2;
    NVDR_GL_CUDA_CHECK(cudaGraphicsMapResources(nin, in, stream));
    {
      void* ptr[3] = {nullptr, nullptr, nullptr};
      std::size_t sz = 0;
      cudaError_t err = cudaSuccess;
      for (int i = 0; i < nin && err == cudaSuccess; ++i) err = cudaGraphicsResourceGetMappedPointer(&ptr[i], &sz, in[i]);
      if (err == cudaSuccess) err = cudaMemcpyAsync(ptr[0], pos.data_ptr(), pos_bytes, cudaMemcpyDeviceToDevice, stream);
      if (err == cudaSuccess) err = cudaMemcpyAsync(ptr[1], tri.data_ptr(), tri_bytes, cudaMemcpyDeviceToDevice, stream);
      if (err == cudaSuccess && peel)
        err = cudaMemcpyAsync(ptr[2], prev_z->data_ptr(), prev_bytes, cudaMemcpyDeviceToDevice, stream);
      cudaError_t uerr = cudaGraphicsUnmapResources(nin, in, stream);
      NVDR_GL_CUDA_CHECK(err);
      NVDR_GL_CUDA_CHECK(uerr);
    }
    gl_call([&] {
      rast_->render(job, nullptr, nullptr);
      return 0;
    });
    NVDR_GL_CUDA_CHECK(cudaGraphicsMapResources(1, &out, stream));
    {
      void* ptr = nullptr;
      std::size_t sz = 0;
      cudaError_t err = cudaGraphicsResourceGetMappedPointer(&ptr, &sz, out);
      const std::size_t plane = std::size_t(n) * height * width * 4 * sizeof(float);
      if (err == cudaSuccess) err = cudaMemcpyAsync(rast.data_ptr(), ptr, plane, cudaMemcpyDeviceToDevice, stream);
      if (err == cudaSuccess && output_db_)
        err = cudaMemcpyAsync(db.data_ptr(), static_cast<char*>(ptr) + plane, plane, cudaMemcpyDeviceToDevice, stream);
      cudaError_t uerr = cudaGraphicsUnmapResources(1, &out, stream);
      NVDR_GL_CUDA_CHECK(err);
      NVDR_GL_CUDA_CHECK(uerr);
    }
    return {rast, db};
  }

  std::mutex mu_;
  int device_;
  bool output_db_;
  bool manual_;
  std::unique_ptr<nvdr_gl::PlatformContext> plat_;
  std::unique_ptr<nvdr_gl::Rasterizer> rast_;
  cudaGraphicsResource* res_[static_cast<int>(Buf::Count)] = {nullptr, nullptr, nullptr, nullptr};
};

}  // namespace

TORCH_LIBRARY(nvdiffrast_gl, m) {
  m.class_<Context>("Context")
      .def(torch::init<int64_t, bool, bool>())
      .def("set_context", &Context::set_context)
      .def("release_context", &Context::release_context)
      .def("is_current", &Context::is_current)
      .def("info", &Context::info)
      .def("device", &Context::device)
      .def("set_limits", &Context::set_limits)
      .def("rasterize", &Context::rasterize);
}

static struct PyModuleDef nvdr_gl_module = {PyModuleDef_HEAD_INIT, "_gl", "nvdiffrast OpenGL rasterizer", -1,
                                            nullptr};

PyMODINIT_FUNC PyInit__gl(void) { return PyModule_Create(&nvdr_gl_module); }
