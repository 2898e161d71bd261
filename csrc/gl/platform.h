// The small interface between the OS-specific context code (context_egl.cpp on Linux,
// context_wgl.cpp on Windows) and everything else. Nothing here depends on torch or CUDA so the
// Windows half can be compiled by ci/check_gl_windows.sh with mingw-w64.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>

namespace nvdr_gl {

// Raised for every failure to create or use a context; the torch layer turns it into a Python
// RuntimeError. Messages say what was found and what to install or change.
class GLError : public std::runtime_error {
 public:
  explicit GLError(const std::string& msg) : std::runtime_error(msg) {}
};

struct PlatformOptions {
  int cuda_device = -1;  // CUDA ordinal whose GPU should render; -1: any GPU/driver (CPU tensors)
};

// An OpenGL >= 4.3 core context that is not current on any thread unless make_current() was called.
class PlatformContext {
 public:
  virtual ~PlatformContext() = default;
  // Makes the context current on the calling thread; remembers what was current before so that
  // release() can restore it. Throws GLError when the context is current on another thread.
  virtual void make_current() = 0;
  virtual void release() = 0;
  virtual bool is_current() const = 0;
  // Address of a GL entry point (core or extension); nullptr when absent.
  virtual void* get_proc(const char* name) const = 0;
  // One line naming the platform path taken (e.g. "EGL device 0 (NVIDIA, CUDA device 0)").
  virtual std::string description() const = 0;
};

// Parses "4.6.0 NVIDIA 580.1" / "4.5 (Core Profile) Mesa 22.3.6" into major/minor; false if unparsable.
inline bool parse_gl_version(const char* s, int* major, int* minor) {
  *major = *minor = 0;
  if (!s) return false;
  while (*s && (*s < '0' || *s > '9')) ++s;  // OpenGL ES strings start with "OpenGL ES "
  int ma = 0, mi = 0;
  if (*s < '0' || *s > '9') return false;
  while (*s >= '0' && *s <= '9') ma = ma * 10 + (*s++ - '0');
  if (*s++ != '.') return false;
  if (*s < '0' || *s > '9') return false;
  while (*s >= '0' && *s <= '9') mi = mi * 10 + (*s++ - '0');
  *major = ma;
  *minor = mi;
  return true;
}

// NVDIFFRAST_GL_DEBUG=1 prints each step of context creation to stderr (for driver problems that
// crash inside the driver, where no exception can tell what happened).
inline void trace(const std::string& step) {
  static const bool on = [] {
    const char* v = std::getenv("NVDIFFRAST_GL_DEBUG");
    return v && *v && *v != '0';
  }();
  if (on) {
    std::fprintf(stderr, "[nvdiffrast gl] %s\n", step.c_str());
    std::fflush(stderr);
  }
}

constexpr int kRequiredMajor = 4;
constexpr int kRequiredMinor = 3;

// Creates the context (and leaves it current on the calling thread; the caller releases it).
std::unique_ptr<PlatformContext> create_platform_context(const PlatformOptions& opt);

}  // namespace nvdr_gl
