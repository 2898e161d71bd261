// Linux: a headless OpenGL core context through EGL (no X11/Wayland). libEGL.so.1 is opened at run
// time, so the module loads on machines without it and reports what is missing only when a
// RasterizeGLContext is created.
#include <dlfcn.h>

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <cstdio>
#include <string>
#include <vector>

#include "gl/platform.h"

namespace nvdr_gl {
namespace {

using EGLDisplay = void*;
using EGLConfig = void*;
using EGLContext = void*;
using EGLSurface = void*;
using EGLDeviceEXT = void*;
using EGLint = std::int32_t;
using EGLBoolean = unsigned int;
using EGLenum = unsigned int;
using EGLAttrib = std::intptr_t;

constexpr EGLint EGL_SUCCESS = 0x3000;
constexpr EGLint EGL_BAD_ACCESS = 0x3002;
constexpr EGLint EGL_NONE = 0x3038;
constexpr EGLint EGL_SURFACE_TYPE = 0x3033;
constexpr EGLint EGL_PBUFFER_BIT = 0x0001;
constexpr EGLint EGL_RENDERABLE_TYPE = 0x3040;
constexpr EGLint EGL_OPENGL_BIT = 0x0008;
constexpr EGLenum EGL_OPENGL_API = 0x30A2;
constexpr EGLint EGL_EXTENSIONS = 0x3055;
constexpr EGLint EGL_VENDOR = 0x3053;
constexpr EGLint EGL_VERSION = 0x3054;
constexpr EGLint EGL_WIDTH = 0x3057;
constexpr EGLint EGL_HEIGHT = 0x3056;
constexpr EGLint EGL_DRAW = 0x3059;
constexpr EGLint EGL_READ = 0x305A;
constexpr EGLint EGL_CONTEXT_MAJOR_VERSION = 0x3098;
constexpr EGLint EGL_CONTEXT_MINOR_VERSION = 0x30FB;
constexpr EGLint EGL_CONTEXT_OPENGL_PROFILE_MASK = 0x30FD;
constexpr EGLint EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT = 0x0001;
constexpr EGLenum EGL_PLATFORM_DEVICE_EXT = 0x313F;
constexpr EGLenum EGL_PLATFORM_SURFACELESS_MESA = 0x31DD;
constexpr EGLint EGL_CUDA_DEVICE_NV = 0x323A;
constexpr EGLint EGL_DRM_DEVICE_FILE_EXT = 0x3233;

constexpr const char* kInstallHint =
    "To use RasterizeGLContext on Linux you need an EGL loader and an OpenGL >= 4.3 driver: "
    "install the EGL loader (Debian/Ubuntu: apt-get install libegl1 libopengl0; Fedora: libglvnd-egl "
    "libglvnd-opengl) and a driver (NVIDIA: the NVIDIA driver's EGL/GL libraries - in containers set "
    "NVIDIA_DRIVER_CAPABILITIES=graphics,compute,utility or =all so that they are mounted; CPU-only CI: "
    "Mesa, apt-get install libegl-mesa0 libgl1-mesa-dri). RasterizeCudaContext needs none of this.";

struct EglApi {
  void* lib = nullptr;
  void* gl_lib = nullptr;
  std::string load_error;
  void* (*GetProcAddress)(const char*) = nullptr;
  EGLint (*GetError)() = nullptr;
  EGLDisplay (*GetDisplay)(void*) = nullptr;
  EGLBoolean (*Initialize)(EGLDisplay, EGLint*, EGLint*) = nullptr;
  const char* (*QueryString)(EGLDisplay, EGLint) = nullptr;
  EGLBoolean (*ChooseConfig)(EGLDisplay, const EGLint*, EGLConfig*, EGLint, EGLint*) = nullptr;
  EGLBoolean (*BindAPI)(EGLenum) = nullptr;
  EGLenum (*QueryAPI)() = nullptr;
  EGLContext (*CreateContext)(EGLDisplay, EGLConfig, EGLContext, const EGLint*) = nullptr;
  EGLBoolean (*DestroyContext)(EGLDisplay, EGLContext) = nullptr;
  EGLBoolean (*MakeCurrent)(EGLDisplay, EGLSurface, EGLSurface, EGLContext) = nullptr;
  EGLContext (*GetCurrentContext)() = nullptr;
  EGLDisplay (*GetCurrentDisplay)() = nullptr;
  EGLSurface (*GetCurrentSurface)(EGLint) = nullptr;
  EGLSurface (*CreatePbufferSurface)(EGLDisplay, EGLConfig, const EGLint*) = nullptr;
  EGLBoolean (*DestroySurface)(EGLDisplay, EGLSurface) = nullptr;
  // Extensions (may stay null).
  EGLBoolean (*QueryDevicesEXT)(EGLint, EGLDeviceEXT*, EGLint*) = nullptr;
  EGLBoolean (*QueryDeviceAttribEXT)(EGLDeviceEXT, EGLint, EGLAttrib*) = nullptr;
  const char* (*QueryDeviceStringEXT)(EGLDeviceEXT, EGLint) = nullptr;
  EGLDisplay (*GetPlatformDisplayEXT)(EGLenum, void*, const EGLint*) = nullptr;
};

template <typename F>
bool load_sym(void* lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(dlsym(lib, name));
  return *out != nullptr;
}

const EglApi& egl() {
  static EglApi api;
  static std::once_flag once;
  std::call_once(once, [] {
    // NVDIFFRAST_EGL_LIBRARY names another EGL library (a path or soname) to use instead.
    const char* forced = std::getenv("NVDIFFRAST_EGL_LIBRARY");
    std::vector<const char*> names = {"libEGL.so.1", "libEGL.so"};
    if (forced && *forced) names = {forced};
    std::string tried;
    for (const char* n : names) {
      api.lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
      if (api.lib) break;
      const char* e = dlerror();
      tried += std::string("\n  ") + n + ": " + (e ? e : "not found");
    }
    if (!api.lib) {
      api.load_error = "could not load the EGL library:" + tried;
      return;
    }
    bool ok = load_sym(api.lib, "eglGetProcAddress", &api.GetProcAddress) &&
              load_sym(api.lib, "eglGetError", &api.GetError) &&
              load_sym(api.lib, "eglGetDisplay", &api.GetDisplay) &&
              load_sym(api.lib, "eglInitialize", &api.Initialize) &&
              load_sym(api.lib, "eglQueryString", &api.QueryString) &&
              load_sym(api.lib, "eglChooseConfig", &api.ChooseConfig) &&
              load_sym(api.lib, "eglBindAPI", &api.BindAPI) && load_sym(api.lib, "eglQueryAPI", &api.QueryAPI) &&
              load_sym(api.lib, "eglCreateContext", &api.CreateContext) &&
              load_sym(api.lib, "eglDestroyContext", &api.DestroyContext) &&
              load_sym(api.lib, "eglMakeCurrent", &api.MakeCurrent) &&
              load_sym(api.lib, "eglGetCurrentContext", &api.GetCurrentContext) &&
              load_sym(api.lib, "eglGetCurrentDisplay", &api.GetCurrentDisplay) &&
              load_sym(api.lib, "eglGetCurrentSurface", &api.GetCurrentSurface) &&
              load_sym(api.lib, "eglCreatePbufferSurface", &api.CreatePbufferSurface) &&
              load_sym(api.lib, "eglDestroySurface", &api.DestroySurface);
    if (!ok) {
      api.load_error = "the EGL library lacks EGL 1.4 entry points (too old or not a real libEGL)";
      api.lib = nullptr;
      return;
    }
    api.QueryDevicesEXT = reinterpret_cast<decltype(api.QueryDevicesEXT)>(api.GetProcAddress("eglQueryDevicesEXT"));
    api.QueryDeviceAttribEXT =
        reinterpret_cast<decltype(api.QueryDeviceAttribEXT)>(api.GetProcAddress("eglQueryDeviceAttribEXT"));
    api.QueryDeviceStringEXT =
        reinterpret_cast<decltype(api.QueryDeviceStringEXT)>(api.GetProcAddress("eglQueryDeviceStringEXT"));
    api.GetPlatformDisplayEXT =
        reinterpret_cast<decltype(api.GetPlatformDisplayEXT)>(api.GetProcAddress("eglGetPlatformDisplayEXT"));
    // Fallback for core GL symbols on EGL implementations without EGL_KHR_get_all_proc_addresses.
    const char* gl_names[] = {"libOpenGL.so.0", "libGL.so.1"};
    for (const char* n : gl_names) {
      api.gl_lib = dlopen(n, RTLD_NOW | RTLD_LOCAL);
      if (api.gl_lib) break;
    }
  });
  return api;
}

bool has_ext(const char* list, const char* name) {
  if (!list) return false;
  const std::string l = std::string(" ") + list + " ";
  return l.find(std::string(" ") + name + " ") != std::string::npos;
}

std::string egl_error_name(EGLint e) {
  static const char* names[] = {"EGL_SUCCESS",         "EGL_NOT_INITIALIZED", "EGL_BAD_ACCESS",
                                "EGL_BAD_ALLOC",       "EGL_BAD_ATTRIBUTE",   "EGL_BAD_CONFIG",
                                "EGL_BAD_CONTEXT",     "EGL_BAD_CURRENT_SURFACE", "EGL_BAD_DISPLAY",
                                "EGL_BAD_MATCH",       "EGL_BAD_NATIVE_PIXMAP", "EGL_BAD_NATIVE_WINDOW",
                                "EGL_BAD_PARAMETER",   "EGL_BAD_SURFACE",     "EGL_CONTEXT_LOST"};
  char hex[32];
  std::snprintf(hex, sizeof(hex), " (0x%x)", static_cast<unsigned>(e));
  return std::string(e >= 0x3000 && e <= 0x300E ? names[e - 0x3000] : "") + hex;
}

// Restores the thread's EGL client API on scope exit (it is per-thread state other code may rely on).
class ApiScope {
 public:
  ApiScope() : prev_(egl().QueryAPI()) { egl().BindAPI(EGL_OPENGL_API); }
  ~ApiScope() {
    if (prev_ != EGL_OPENGL_API) egl().BindAPI(prev_);
  }
  ApiScope(const ApiScope&) = delete;
  ApiScope& operator=(const ApiScope&) = delete;

 private:
  EGLenum prev_;
};

class EglContext : public PlatformContext {
 public:
  EglContext(EGLDisplay dpy, EGLContext ctx, EGLSurface surf, std::string desc)
      : dpy_(dpy), ctx_(ctx), surf_(surf), desc_(std::move(desc)) {}

  ~EglContext() override {
    const EglApi& api = egl();
    ApiScope scope;
    if (api.GetCurrentContext() == ctx_) api.MakeCurrent(dpy_, nullptr, nullptr, nullptr);
    // Destroying a context still current on another thread is deferred by EGL until released.
    api.DestroyContext(dpy_, ctx_);
    if (surf_) api.DestroySurface(dpy_, surf_);
    // The display is never terminated: other contexts of this process may share it.
  }

  void make_current() override {
    const EglApi& api = egl();
    ApiScope scope;
    if (api.GetCurrentContext() == ctx_) return;
    prev_ctx_ = api.GetCurrentContext();
    prev_dpy_ = api.GetCurrentDisplay();
    prev_draw_ = api.GetCurrentSurface(EGL_DRAW);
    prev_read_ = api.GetCurrentSurface(EGL_READ);
    if (!api.MakeCurrent(dpy_, surf_, surf_, ctx_)) {
      EGLint e = api.GetError();
      prev_ctx_ = nullptr;
      if (e == EGL_BAD_ACCESS)
        throw GLError(
            "RasterizeGLContext: the OpenGL context is current on another thread (eglMakeCurrent: EGL_BAD_ACCESS). "
            "A GL context can be current on one thread at a time: in manual mode call release_context() on the "
            "thread that called set_context() first, or use one context per thread.");
      throw GLError("RasterizeGLContext: eglMakeCurrent failed with " + egl_error_name(e));
    }
  }

  void release() override {
    const EglApi& api = egl();
    ApiScope scope;
    if (api.GetCurrentContext() != ctx_) return;
    bool ok;
    if (prev_ctx_)
      ok = api.MakeCurrent(prev_dpy_, prev_draw_, prev_read_, prev_ctx_);
    else
      ok = api.MakeCurrent(dpy_, nullptr, nullptr, nullptr);
    prev_ctx_ = nullptr;
    if (!ok) throw GLError("RasterizeGLContext: releasing the context failed with " + egl_error_name(api.GetError()));
  }

  bool is_current() const override {
    ApiScope scope;
    return egl().GetCurrentContext() == ctx_;
  }

  void* get_proc(const char* name) const override {
    const EglApi& api = egl();
    // eglGetProcAddress serves core functions too (EGL 1.5 / EGL_KHR_get_all_proc_addresses, and
    // GLVND dispatch stubs); the GL library is only a fallback for older EGLs.
    void* p = reinterpret_cast<void*>(api.GetProcAddress(name));
    if (!p && api.gl_lib) p = dlsym(api.gl_lib, name);
    return p;
  }

  std::string description() const override { return desc_; }

 private:
  EGLDisplay dpy_;
  EGLContext ctx_;
  EGLSurface surf_;
  std::string desc_;
  EGLContext prev_ctx_ = nullptr;
  EGLDisplay prev_dpy_ = nullptr;
  EGLSurface prev_draw_ = nullptr;
  EGLSurface prev_read_ = nullptr;
};

// Displays are obtained only when tried: asking some drivers for a display they cannot serve
// (e.g. the default display on a headless NVIDIA machine) is not always harmless.
struct Candidate {
  std::function<EGLDisplay()> get;
  std::string label;
};

// Tries to build a 4.3+ core context on one display. On failure returns null and appends to `notes`.
std::unique_ptr<PlatformContext> try_display(const Candidate& c, std::string* notes) {
  const EglApi& api = egl();
  auto note = [&](const std::string& s) { *notes += "\n  " + c.label + ": " + s; };
  EGLint major = 0, minor = 0;
  trace("trying " + c.label);
  EGLDisplay dpy = c.get();
  if (!dpy) {
    note("no display (" + egl_error_name(api.GetError()) + ")");
    return nullptr;
  }
  trace("eglInitialize");
  if (!api.Initialize(dpy, &major, &minor)) {
    note("eglInitialize failed with " + egl_error_name(api.GetError()));
    return nullptr;
  }
  const char* vendor = api.QueryString(dpy, EGL_VENDOR);
  const char* dexts = api.QueryString(dpy, EGL_EXTENSIONS);
  std::string who = std::string("EGL ") + std::to_string(major) + "." + std::to_string(minor) + " " +
                    (vendor ? vendor : "unknown vendor");
  ApiScope scope;
  if (!api.BindAPI(EGL_OPENGL_API)) {
    note(who + ": desktop OpenGL is not supported by this EGL (eglBindAPI(EGL_OPENGL_API) failed)");
    return nullptr;
  }
  trace(who + ": eglBindAPI ok, eglChooseConfig");
  const EGLint cfg_attr[] = {EGL_SURFACE_TYPE, EGL_PBUFFER_BIT, EGL_RENDERABLE_TYPE, EGL_OPENGL_BIT, EGL_NONE};
  EGLConfig cfg = nullptr;
  EGLint ncfg = 0;
  if (!api.ChooseConfig(dpy, cfg_attr, &cfg, 1, &ncfg) || ncfg < 1) {
    if (!has_ext(dexts, "EGL_KHR_no_config_context")) {
      note(who + ": no EGL config supports desktop OpenGL");
      return nullptr;
    }
    cfg = nullptr;  // EGL_NO_CONFIG_KHR
  }
  const EGLint ctx_attr[] = {EGL_CONTEXT_MAJOR_VERSION,       kRequiredMajor,
                             EGL_CONTEXT_MINOR_VERSION,       kRequiredMinor,
                             EGL_CONTEXT_OPENGL_PROFILE_MASK, EGL_CONTEXT_OPENGL_CORE_PROFILE_BIT,
                             EGL_NONE};
  trace("eglCreateContext (OpenGL 4.3 core)");
  EGLContext ctx = api.CreateContext(dpy, cfg, nullptr, ctx_attr);
  const bool surfaceless = has_ext(dexts, "EGL_KHR_surfaceless_context");
  auto make_surface = [&]() -> EGLSurface {
    if (surfaceless || !cfg) return nullptr;
    const EGLint pb_attr[] = {EGL_WIDTH, 1, EGL_HEIGHT, 1, EGL_NONE};
    return api.CreatePbufferSurface(dpy, cfg, pb_attr);
  };
  if (!ctx) {
    std::string why = egl_error_name(api.GetError());
    // Find out what the driver does offer, so the message can say what was found.
    std::string found = "no OpenGL context at all";
    EGLContext any = api.CreateContext(dpy, cfg, nullptr, nullptr);
    if (any) {
      EGLSurface s = make_surface();
      if (api.MakeCurrent(dpy, s, s, any)) {
        using GetStr = const unsigned char* (*)(unsigned int);
        auto gs = reinterpret_cast<GetStr>(api.GetProcAddress("glGetString"));
        const unsigned char* v = gs ? gs(0x1F02) : nullptr;
        const unsigned char* r = gs ? gs(0x1F01) : nullptr;
        found = std::string("OpenGL '") + (v ? reinterpret_cast<const char*>(v) : "?") + "' on '" +
                (r ? reinterpret_cast<const char*>(r) : "?") + "'";
        api.MakeCurrent(dpy, nullptr, nullptr, nullptr);
      }
      api.DestroyContext(dpy, any);
      if (s) api.DestroySurface(dpy, s);
    }
    note(who + ": creating an OpenGL " + std::to_string(kRequiredMajor) + "." + std::to_string(kRequiredMinor) +
         " core context failed with " + why + "; the driver offers " + found);
    return nullptr;
  }
  EGLSurface surf = make_surface();
  if (!surfaceless && cfg && !surf) {
    note(who + ": eglCreatePbufferSurface failed with " + egl_error_name(api.GetError()));
    api.DestroyContext(dpy, ctx);
    return nullptr;
  }
  auto out = std::make_unique<EglContext>(dpy, ctx, surf, c.label + " (" + who + ")");
  trace(std::string("eglMakeCurrent (") + (surf ? "pbuffer" : "surfaceless") + ")");
  try {
    out->make_current();
  } catch (const GLError& e) {
    note(e.what());
    return nullptr;
  }
  trace("glGetString(GL_VERSION)");
  using GetStr = const unsigned char* (*)(unsigned int);
  auto gs = reinterpret_cast<GetStr>(out->get_proc("glGetString"));
  const char* ver = gs ? reinterpret_cast<const char*>(gs(0x1F02)) : nullptr;
  int gma = 0, gmi = 0;
  trace(std::string("GL_VERSION: ") + (ver ? ver : "(null)"));
  if (!parse_gl_version(ver, &gma, &gmi) || gma * 10 + gmi < kRequiredMajor * 10 + kRequiredMinor) {
    const char* ren = gs ? reinterpret_cast<const char*>(gs(0x1F01)) : nullptr;
    note(who + ": the context reports OpenGL '" + (ver ? ver : "(none)") + "' on '" + (ren ? ren : "?") +
         "', below the required " + std::to_string(kRequiredMajor) + "." + std::to_string(kRequiredMinor));
    out->release();
    return nullptr;
  }
  return out;
}

}  // namespace

std::unique_ptr<PlatformContext> create_platform_context(const PlatformOptions& opt) {
  // NVIDIA's GL driver keeps a shader disk cache under $XDG_CACHE_HOME or $HOME; in stripped-down
  // environments where neither is set it has been seen to crash compiling shaders, so turn the cache
  // off there (unless the user configured it). Process-wide, before the driver is loaded.
  auto unset = [](const char* v) { return !std::getenv(v) || !*std::getenv(v); };
  if (unset("HOME") && unset("XDG_CACHE_HOME") && unset("__GL_SHADER_DISK_CACHE") &&
      unset("__GL_SHADER_DISK_CACHE_PATH")) {
    setenv("__GL_SHADER_DISK_CACHE", "0", 0);
    trace("HOME and XDG_CACHE_HOME unset: __GL_SHADER_DISK_CACHE=0");
  }
  trace("loading the EGL library");
  const EglApi& api = egl();
  if (!api.lib) throw GLError(std::string("RasterizeGLContext: ") + api.load_error + "\n" + kInstallHint);
  trace("EGL library loaded; cuda_device=" + std::to_string(opt.cuda_device));

  std::vector<Candidate> cands;
  std::string notes;
  const char* cext = api.QueryString(nullptr, EGL_EXTENSIONS);  // client extensions (EGL 1.5 / EXT_client_extensions)
  const bool can_platform = api.GetPlatformDisplayEXT != nullptr;
  const bool can_enumerate = can_platform && api.QueryDevicesEXT &&
                             (has_ext(cext, "EGL_EXT_device_enumeration") || has_ext(cext, "EGL_EXT_device_base"));
  if (can_enumerate) {
    EGLDeviceEXT devs[32];
    EGLint ndev = 0;
    if (api.QueryDevicesEXT(32, devs, &ndev)) {
      trace("EGL devices: " + std::to_string(ndev));
      bool matched = false;
      for (EGLint i = 0; i < ndev; ++i) {
        EGLAttrib cuda = -1;
        const char* dexts = api.QueryDeviceStringEXT ? api.QueryDeviceStringEXT(devs[i], EGL_EXTENSIONS) : nullptr;
        bool has_cuda = has_ext(dexts, "EGL_NV_device_cuda") && api.QueryDeviceAttribEXT &&
                        api.QueryDeviceAttribEXT(devs[i], EGL_CUDA_DEVICE_NV, &cuda);
        std::string label = "EGL device " + std::to_string(i);
        if (has_cuda) label += " (CUDA device " + std::to_string(static_cast<long long>(cuda)) + ")";
        else if (has_ext(dexts, "EGL_EXT_device_drm") && api.QueryDeviceStringEXT) {
          const char* f = api.QueryDeviceStringEXT(devs[i], EGL_DRM_DEVICE_FILE_EXT);
          if (f) label += std::string(" (") + f + ")";
        }
        if (opt.cuda_device >= 0) {
          if (has_cuda && cuda == opt.cuda_device) {
            EGLDeviceEXT dev = devs[i];
            cands.insert(cands.begin(),
                         {[dev] { return egl().GetPlatformDisplayEXT(EGL_PLATFORM_DEVICE_EXT, dev, nullptr); }, label});
            matched = true;
          }
        } else {
          EGLDeviceEXT dev = devs[i];
          cands.push_back({[dev] { return egl().GetPlatformDisplayEXT(EGL_PLATFORM_DEVICE_EXT, dev, nullptr); }, label});
        }
      }
      if (opt.cuda_device >= 0 && !matched)
        notes += "\n  no EGL device reports CUDA device " + std::to_string(opt.cuda_device) +
                 " (EGL_NV_device_cuda); falling back to the default display";
    }
  } else {
    notes += "\n  EGL device enumeration (EGL_EXT_device_enumeration) is not available";
  }
  if (can_platform && has_ext(cext, "EGL_MESA_platform_surfaceless"))
    cands.push_back({[] { return egl().GetPlatformDisplayEXT(EGL_PLATFORM_SURFACELESS_MESA, nullptr, nullptr); },
                     "surfaceless display"});
  // The default display needs a window system or EGL_PLATFORM; headless, some drivers crash on it.
  const char* ws[] = {"DISPLAY", "WAYLAND_DISPLAY", "EGL_PLATFORM"};
  bool have_ws = false;
  for (const char* v : ws) have_ws = have_ws || (std::getenv(v) && *std::getenv(v));
  if (have_ws)
    cands.push_back({[] { return egl().GetDisplay(nullptr); }, "default display"});
  else
    notes += "\n  default display: not tried (no DISPLAY, WAYLAND_DISPLAY or EGL_PLATFORM set)";

  for (const Candidate& c : cands) {
    auto ctx = try_display(c, &notes);
    if (ctx) return ctx;
  }
  throw GLError("RasterizeGLContext: could not create an OpenGL " + std::to_string(kRequiredMajor) + "." +
                std::to_string(kRequiredMinor) + " (or later) core context through EGL. What was tried:" + notes +
                "\n" + kInstallHint);
}

}  // namespace nvdr_gl
