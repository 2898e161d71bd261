// Windows: an OpenGL core context through WGL on a hidden window. opengl32.dll is loaded at run
// time (no import-library dependency). The GPU is the one Windows assigns to OpenGL for this process
// (set per application in the NVIDIA control panel / Windows graphics settings); the torch layer
// checks that it is the requested CUDA device before any interop.
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "gl/platform.h"

namespace nvdr_gl {
namespace {

constexpr int WGL_CONTEXT_MAJOR_VERSION_ARB = 0x2091;
constexpr int WGL_CONTEXT_MINOR_VERSION_ARB = 0x2092;
constexpr int WGL_CONTEXT_PROFILE_MASK_ARB = 0x9126;
constexpr int WGL_CONTEXT_CORE_PROFILE_BIT_ARB = 0x0001;

constexpr const char* kInstallHint =
    "RasterizeGLContext on Windows needs an OpenGL >= 4.3 driver for the GPU (install or update the NVIDIA "
    "driver; Remote Desktop sessions and the 'Microsoft Basic Display Adapter' only offer OpenGL 1.1). "
    "RasterizeCudaContext needs none of this.";

using PFN_CreateContext = HGLRC(WINAPI*)(HDC);
using PFN_DeleteContext = BOOL(WINAPI*)(HGLRC);
using PFN_MakeCurrent = BOOL(WINAPI*)(HDC, HGLRC);
using PFN_GetProcAddress = PROC(WINAPI*)(LPCSTR);
using PFN_GetCurrentContext = HGLRC(WINAPI*)();
using PFN_GetCurrentDC = HDC(WINAPI*)();
using PFN_CreateContextAttribsARB = HGLRC(WINAPI*)(HDC, HGLRC, const int*);

struct WglApi {
  HMODULE lib = nullptr;
  std::string load_error;
  PFN_CreateContext CreateContext = nullptr;
  PFN_DeleteContext DeleteContext = nullptr;
  PFN_MakeCurrent MakeCurrent = nullptr;
  PFN_GetProcAddress GetProcAddress = nullptr;
  PFN_GetCurrentContext GetCurrentContext = nullptr;
  PFN_GetCurrentDC GetCurrentDC = nullptr;
};

template <typename F>
bool load_sym(HMODULE lib, const char* name, F* out) {
  *out = reinterpret_cast<F>(reinterpret_cast<void*>(::GetProcAddress(lib, name)));
  return *out != nullptr;
}

const WglApi& wgl() {
  static WglApi api;
  static std::once_flag once;
  std::call_once(once, [] {
    api.lib = LoadLibraryA("opengl32.dll");
    if (!api.lib) {
      api.load_error = "could not load opengl32.dll (error " + std::to_string(GetLastError()) + ")";
      return;
    }
    bool ok = load_sym(api.lib, "wglCreateContext", &api.CreateContext) &&
              load_sym(api.lib, "wglDeleteContext", &api.DeleteContext) &&
              load_sym(api.lib, "wglMakeCurrent", &api.MakeCurrent) &&
              load_sym(api.lib, "wglGetProcAddress", &api.GetProcAddress) &&
              load_sym(api.lib, "wglGetCurrentContext", &api.GetCurrentContext) &&
              load_sym(api.lib, "wglGetCurrentDC", &api.GetCurrentDC);
    if (!ok) {
      api.load_error = "opengl32.dll lacks the WGL entry points";
      api.lib = nullptr;
    }
  });
  return api;
}

const char* window_class() {
  static std::once_flag once;
  static const char* name = "nvdiffrast_gl_hidden_window";
  std::call_once(once, [] {
    WNDCLASSEXA wc = {};
    wc.cbSize = sizeof(wc);
    wc.style = CS_OWNDC;
    wc.lpfnWndProc = DefWindowProcA;
    wc.hInstance = GetModuleHandleA(nullptr);
    wc.lpszClassName = name;
    RegisterClassExA(&wc);  // failure shows up as CreateWindowEx failing
  });
  return name;
}

std::string last_error(const char* what) { return std::string(what) + " failed (error " + std::to_string(GetLastError()) + ")"; }

class WglContext : public PlatformContext {
 public:
  WglContext(HWND hwnd, HDC dc, HGLRC ctx) : hwnd_(hwnd), dc_(dc), ctx_(ctx) {}
  ~WglContext() override {
    const WglApi& api = wgl();
    if (api.GetCurrentContext() == ctx_) api.MakeCurrent(nullptr, nullptr);
    api.DeleteContext(ctx_);
    ReleaseDC(hwnd_, dc_);
    DestroyWindow(hwnd_);  // fails harmlessly when called from another thread than the creator
  }

  void make_current() override {
    const WglApi& api = wgl();
    if (api.GetCurrentContext() == ctx_) return;
    prev_ctx_ = api.GetCurrentContext();
    prev_dc_ = api.GetCurrentDC();
    if (!api.MakeCurrent(dc_, ctx_)) {
      DWORD e = GetLastError();
      prev_ctx_ = nullptr;
      if (e == ERROR_BUSY)
        throw GLError(
            "RasterizeGLContext: the OpenGL context is current on another thread (wglMakeCurrent: ERROR_BUSY). "
            "A GL context can be current on one thread at a time: in manual mode call release_context() on the "
            "thread that called set_context() first, or use one context per thread.");
      throw GLError("RasterizeGLContext: wglMakeCurrent failed (error " + std::to_string(e) + ")");
    }
  }

  void release() override {
    const WglApi& api = wgl();
    if (api.GetCurrentContext() != ctx_) return;
    BOOL ok = prev_ctx_ ? api.MakeCurrent(prev_dc_, prev_ctx_) : api.MakeCurrent(nullptr, nullptr);
    prev_ctx_ = nullptr;
    if (!ok) throw GLError("RasterizeGLContext: " + last_error("releasing the context (wglMakeCurrent)"));
  }

  bool is_current() const override { return wgl().GetCurrentContext() == ctx_; }

  void* get_proc(const char* name) const override {
    const WglApi& api = wgl();
    void* p = reinterpret_cast<void*>(api.GetProcAddress(name));
    const std::intptr_t v = reinterpret_cast<std::intptr_t>(p);
    if (v == 0 || v == 1 || v == 2 || v == 3 || v == -1)  // wglGetProcAddress has no GL 1.1 symbols
      p = reinterpret_cast<void*>(::GetProcAddress(api.lib, name));
    return p;
  }

  std::string description() const override { return "WGL hidden window"; }

 private:
  HWND hwnd_;
  HDC dc_;
  HGLRC ctx_;
  HGLRC prev_ctx_ = nullptr;
  HDC prev_dc_ = nullptr;
};

}  // namespace

std::unique_ptr<PlatformContext> create_platform_context(const PlatformOptions& /*opt*/) {
  const WglApi& api = wgl();
  if (!api.lib) throw GLError(std::string("RasterizeGLContext: ") + api.load_error + "\n" + kInstallHint);
  HWND hwnd = CreateWindowExA(0, window_class(), "nvdiffrast", WS_OVERLAPPEDWINDOW, 0, 0, 16, 16, nullptr, nullptr,
                              GetModuleHandleA(nullptr), nullptr);
  if (!hwnd) throw GLError("RasterizeGLContext: " + last_error("creating the hidden window (CreateWindowEx)"));
  HDC dc = GetDC(hwnd);
  auto fail = [&](const std::string& msg) -> GLError {
    if (dc) ReleaseDC(hwnd, dc);
    DestroyWindow(hwnd);
    return GLError("RasterizeGLContext: " + msg + "\n" + kInstallHint);
  };
  if (!dc) throw fail(last_error("GetDC"));
  PIXELFORMATDESCRIPTOR pfd = {};
  pfd.nSize = sizeof(pfd);
  pfd.nVersion = 1;
  pfd.dwFlags = PFD_DRAW_TO_WINDOW | PFD_SUPPORT_OPENGL | PFD_DOUBLEBUFFER;
  pfd.iPixelType = PFD_TYPE_RGBA;
  pfd.cColorBits = 32;
  pfd.cDepthBits = 24;
  pfd.iLayerType = PFD_MAIN_PLANE;
  int pf = ChoosePixelFormat(dc, &pfd);
  if (!pf || !SetPixelFormat(dc, pf, &pfd)) throw fail(last_error("choosing an OpenGL pixel format"));

  // A legacy context is needed to look up wglCreateContextAttribsARB.
  HGLRC legacy = api.CreateContext(dc);
  if (!legacy) throw fail(last_error("wglCreateContext"));
  if (!api.MakeCurrent(dc, legacy)) {
    api.DeleteContext(legacy);
    throw fail(last_error("wglMakeCurrent"));
  }
  using GetStr = const unsigned char*(WINAPI*)(unsigned int);
  auto gs = reinterpret_cast<GetStr>(reinterpret_cast<void*>(::GetProcAddress(api.lib, "glGetString")));
  const unsigned char* v = gs ? gs(0x1F02) : nullptr;
  const unsigned char* r = gs ? gs(0x1F01) : nullptr;
  std::string found = std::string("OpenGL '") + (v ? reinterpret_cast<const char*>(v) : "?") + "' on '" +
                      (r ? reinterpret_cast<const char*>(r) : "?") + "'";
  auto create = reinterpret_cast<PFN_CreateContextAttribsARB>(
      reinterpret_cast<void*>(api.GetProcAddress("wglCreateContextAttribsARB")));
  HGLRC ctx = nullptr;
  if (create) {
    const int attr[] = {WGL_CONTEXT_MAJOR_VERSION_ARB, kRequiredMajor, WGL_CONTEXT_MINOR_VERSION_ARB, kRequiredMinor,
                        WGL_CONTEXT_PROFILE_MASK_ARB, WGL_CONTEXT_CORE_PROFILE_BIT_ARB, 0};
    ctx = create(dc, nullptr, attr);
  }
  api.MakeCurrent(nullptr, nullptr);
  api.DeleteContext(legacy);
  if (!ctx)
    throw fail("creating an OpenGL " + std::to_string(kRequiredMajor) + "." + std::to_string(kRequiredMinor) +
               " core context failed; the driver offers " + found);
  auto out = std::make_unique<WglContext>(hwnd, dc, ctx);
  out->make_current();
  return out;
}

}  // namespace nvdr_gl
