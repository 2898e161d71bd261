#!/usr/bin/env bash
# Compiles the Windows-only OpenGL sources (csrc/gl/*_wgl*.cpp) and the platform-independent GL
# sources that need neither torch nor CUDA with mingw-w64, and links them into a DLL against
# user32/gdi32 only, so the WGL path keeps compiling and keeps its "no GL import library" property
# although CI has no Windows machine. Needs: apt-get install -y g++-mingw-w64-x86-64
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CXX="${MINGW_CXX:-x86_64-w64-mingw32-g++-posix}"
command -v "$CXX" >/dev/null 2>&1 || CXX=x86_64-w64-mingw32-g++
if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "check_gl_windows: mingw-w64 C++ compiler not found; install it with: apt-get install -y g++-mingw-w64-x86-64" >&2
  exit 2
fi
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
# Platform-independent sources that must not depend on torch/CUDA + every Windows-only source.
mapfile -t SOURCES < <(cd "$ROOT" && ls csrc/gl/*_wgl*.cpp csrc/gl/raster_gl.cpp)
OBJS=()
for src in "${SOURCES[@]}"; do
  obj="$OUT/$(basename "${src%.cpp}").o"
  echo "check_gl_windows: $CXX -c $src"
  "$CXX" -std=c++17 -O1 -Wall -Wextra -Werror -Wno-cast-function-type -I"$ROOT/csrc" -c "$ROOT/$src" -o "$obj"
  OBJS+=("$obj")
done
# Linking proves that every symbol the platform interface promises is defined on Windows and that
# nothing pulls in opengl32.lib at link time.
cat >"$OUT/probe.cpp" <<'CPP'
#include "gl/platform.h"
#include "gl/raster_gl.h"
extern "C" __declspec(dllexport) int nvdr_gl_probe(void) {
  try {
    auto ctx = nvdr_gl::create_platform_context(nvdr_gl::PlatformOptions{});
    nvdr_gl::Rasterizer r(*ctx, true);
    return 0;
  } catch (const nvdr_gl::GLError&) {
    return 1;
  }
}
CPP
"$CXX" -std=c++17 -O1 -Wall -Werror -I"$ROOT/csrc" -c "$OUT/probe.cpp" -o "$OUT/probe.o"
"$CXX" -shared -o "$OUT/nvdr_gl_probe.dll" "$OUT/probe.o" "${OBJS[@]}" -luser32 -lgdi32 -static-libgcc -static-libstdc++
if x86_64-w64-mingw32-objdump -p "$OUT/nvdr_gl_probe.dll" 2>/dev/null | grep -i "DLL Name: opengl32" >/dev/null; then
  echo "check_gl_windows: FAILED: the DLL imports opengl32.dll at link time" >&2
  exit 1
fi
echo "check_gl_windows: OK (${#SOURCES[@]} sources compiled and linked with $CXX, no opengl32 import)"
