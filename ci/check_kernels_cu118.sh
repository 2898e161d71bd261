#!/usr/bin/env bash
# Compile every csrc/kernels/*.cu with CUDA 11.8 for sm_50 ... sm_90 (+PTX of sm_90): our cu118 guarantee
# while no torch+cu118 is reachable here. The kernels include no torch header, so nvcc alone suffices.
#
# The toolkit is Debian 12's non-free `nvidia-cuda-toolkit` (11.8.89). Installing that package system-wide
# would also pull libcuda1 and the NVIDIA GLX alternatives (they divert Mesa's libGL/libEGL), so this script
# downloads the .debs with apt and unpacks them into a private prefix instead ($NVDR_CU118_ROOT, default
# /opt/nvdr-cuda-11.8). Only g++-11 (nvcc 11.8 accepts gcc <= 11) is installed system-wide.
#
# Usage: ci/check_kernels_cu118.sh [--arch "50 52 60 61 70 75 80 86 89 90"] [--jobs N] [--out DIR]
#                                  [--src DIR] [--install-only]
# Exit status: 0 when every kernel compiled for every arch; 1 on any compile error (the first lines of each
# error are printed, and the full log of each file is kept in DIR); 2 on setup errors.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="${NVDR_CU118_ROOT:-/opt/nvdr-cuda-11.8}"
ARCHS="50 52 60 61 70 75 80 86 89 90"
JOBS="${MAX_JOBS:-2}"
OUT="${ROOT}/build/cu118-kernels"
INSTALL_ONLY=0
SRC="${ROOT}/csrc/kernels"

while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) ARCHS="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --src) SRC="$(cd "$2" && pwd)"; shift 2 ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "check_kernels_cu118: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[cu118] $*" >&2; }
run() { log "+ $*"; "$@"; }
die() { echo "check_kernels_cu118: $*" >&2; exit 2; }

NVCC="${PREFIX}/usr/lib/nvidia-cuda-toolkit/bin/nvcc"

install_toolkit() {
  local debs="${PREFIX}.debs"
  if ! command -v apt-get >/dev/null; then
    die "apt-get not found: this script installs CUDA 11.8 from Debian's non-free archive (Debian 12 only)"
  fi
  # (apt-cache output is captured first: grep -q under pipefail would turn apt-cache's SIGPIPE into a failure)
  local policy
  policy="$(apt-cache policy nvidia-cuda-toolkit 2>/dev/null || true)"
  if [[ "$policy" != *"Candidate: 11.8"* ]]; then
    # The Debian mirror that the machine already uses, with the contrib/non-free components added.
    local src=/etc/apt/sources.list.d/nvdr-nonfree.sources
    if [[ ! -f "$src" ]]; then
      log "adding the Debian non-free component ($src)"
      cat > "$src" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    run apt-get update -q
  fi
  policy="$(apt-cache policy nvidia-cuda-toolkit 2>/dev/null || true)"
  [[ "$policy" == *"Candidate: 11.8"* ]] \
    || die "Debian's nvidia-cuda-toolkit 11.8 is not available from the configured apt sources"
  mkdir -p "$debs"
  # nvcc + cicc/ptxas/fatbinary (toolkit), libnvvm, the CUDA headers (cuda-dev), and CCCL (thrust/cub/libcu++).
  (cd "$debs" && run apt-get download -q nvidia-cuda-toolkit libnvvm4 nvidia-cuda-dev libthrust-dev libcub-dev \
      libcu++-dev)
  rm -rf "${PREFIX}.tmp" && mkdir -p "${PREFIX}.tmp"
  for deb in "$debs"/nvidia-cuda-toolkit_*.deb "$debs"/libnvvm4_*.deb "$debs"/libthrust-dev_*.deb \
             "$debs"/libcub-dev_*.deb "$debs"/libcu++-dev_*.deb; do
    run dpkg-deb -x "$deb" "${PREFIX}.tmp"
  done
  # nvidia-cuda-dev is mostly static libraries; the compile needs only its headers.
  log "+ dpkg-deb --fsys-tarfile nvidia-cuda-dev_*.deb | tar -x ./usr/include"
  dpkg-deb --fsys-tarfile "$debs"/nvidia-cuda-dev_*.deb | tar -x -C "${PREFIX}.tmp" --wildcards './usr/include/*'
  # Debian's nvcc.profile (a link to /etc/nvcc.profile) has absolute /usr paths; point it at the prefix.
  local bin="${PREFIX}.tmp/usr/lib/nvidia-cuda-toolkit/bin"
  rm -f "$bin/nvcc.profile"
  cat > "$bin/nvcc.profile" <<'EOF'
TOP = $(_HERE_)/../../..
NVVMIR_LIBRARY_DIR = $(TOP)/lib/nvidia-cuda-toolkit/libdevice
PATH += $(_HERE_):$(TOP)/bin:
LD_LIBRARY_PATH += $(TOP)/lib/x86_64-linux-gnu:
INCLUDES += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) "-L$(TOP)/lib/x86_64-linux-gnu/stubs" "-L$(TOP)/lib/x86_64-linux-gnu"
EOF
  rm -rf "$PREFIX" && mv "${PREFIX}.tmp" "$PREFIX"
  rm -rf "$debs"
}

if ! command -v g++-11 >/dev/null; then
  log "installing g++-11 (CUDA 11.8 supports host gcc up to 11)"
  DEBIAN_FRONTEND=noninteractive run apt-get install -y -q --no-install-recommends g++-11 >/dev/null \
    || { run apt-get update -q && DEBIAN_FRONTEND=noninteractive run apt-get install -y -q --no-install-recommends g++-11; }
fi
[[ -x "$NVCC" ]] || install_toolkit
version="$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')"
[[ "$version" == "11.8" ]] || die "$NVCC reports CUDA '$version', expected 11.8"
if [[ $INSTALL_ONLY -eq 1 ]]; then
  log "CUDA $version ready at $PREFIX"
  exit 0
fi

shopt -s nullglob
sources=("$SRC"/*.cu)
shopt -u nullglob
if [[ ${#sources[@]} -eq 0 ]]; then
  echo "check_kernels_cu118: FAIL: no .cu files under $SRC" >&2
  exit 1
fi

gencode=()
newest=0
for a in $ARCHS; do
  [[ "$a" =~ ^[0-9]+$ ]] || die "--arch: '$a' is not a number like 75"
  gencode+=("-gencode=arch=compute_${a},code=sm_${a}")
  (( a > newest )) && newest=$a
done
gencode+=("-gencode=arch=compute_${newest},code=compute_${newest}")

mkdir -p "$OUT"
log "nvcc $version ($NVCC), host g++-11 $(g++-11 -dumpversion), ${#sources[@]} kernels, sm_{${ARCHS// /,}} + PTX ${newest}, jobs $JOBS"

compile_one() {
  local src="$1" name
  name="$(basename "$src" .cu)"
  local start=$SECONDS
  if "$NVCC" -ccbin g++-11 -std=c++17 -O3 -lineinfo --expt-relaxed-constexpr -Xcompiler -fPIC \
      -I"$ROOT/csrc" -I"$SRC" "${gencode[@]}" -c "$src" -o "$OUT/$name.o" \
      > "$OUT/$name.log" 2>&1; then
    echo "ok   $name.cu  $((SECONDS - start)) s  $(stat -c %s "$OUT/$name.o") bytes"
  else
    echo "FAIL $name.cu  (full log: $OUT/$name.log)"
    grep -m 15 -E "error|fatal" "$OUT/$name.log" | sed 's/^/     /' || head -n 15 "$OUT/$name.log"
    return 1
  fi
}
export -f compile_one
export NVCC ROOT OUT SRC
export GENCODE="${gencode[*]}"

start=$SECONDS
status=0
# xargs runs up to $JOBS compiles at once and exits non-zero when any of them failed.
# shellcheck disable=SC2016  # $GENCODE and $1 expand in the child bash, on purpose
printf '%s\0' "${sources[@]}" | xargs -0 -P "$JOBS" -I{} bash -c 'gencode=($GENCODE); compile_one "$1"' _ {} \
  | tee "$OUT/summary.txt" || status=$?
failed=$(grep -c '^FAIL' "$OUT/summary.txt" || true)
if [[ $status -ne 0 || $failed -ne 0 ]]; then
  echo "check_kernels_cu118: FAIL: CUDA 11.8 could not compile ${failed} of ${#sources[@]} kernels" \
       "($((SECONDS - start)) s)" >&2
  exit 1
fi
echo "check_kernels_cu118: OK: ${#sources[@]} kernels compiled with CUDA $version for sm_{${ARCHS// /,}}" \
     "+ PTX ${newest} in $((SECONDS - start)) s"
