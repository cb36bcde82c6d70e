#!/usr/bin/env bash
# Compile cai with `--features cuda` on a machine without a GPU, to the end, and its GPU test
# module; no GPU is needed or used. Run it before changing anything CUDA-facing:
#
#     bash scripts/check-cuda-build.sh              # finds or installs nvcc, then builds
#     bash scripts/check-cuda-build.sh --no-install # fail instead of installing the toolkit
#
# What the build needs, and why this toolkit:
# - `nvcc` from a CUDA toolkit >= 11.8. candle's kernels (candle-kernels) are compiled to PTX
#   by nvcc at build time; cudarc reads the CUDA version from `nvcc --version`
#   (its `cuda-version-from-build-system` feature) and loads the driver, cuBLAS, cuRAND and
#   NVRTC dynamically at run time, so nothing links against a GPU driver here.
# - 11.8 is the newest toolkit these machines can install with `nvcc` in it: Debian bookworm's
#   `nvidia-cuda-toolkit` (11.8.89) in the `contrib`/`non-free` components. (PyPI's
#   `nvidia-cuda-nvcc-cu12` wheels carry ptxas and headers but no `nvcc` binary.) CUDA 11.8
#   targets sm_80 (A100) and sm_90 (H100/H200); the PTX built for compute capability 8.0 is
#   JIT-compiled by the driver for any newer GPU. A newer toolkit found on PATH, in
#   $CUDA_HOME or in /usr/local/cuda is used as is.
# - No GPU means no `nvidia-smi` to ask for the compute capability: CUDA_COMPUTE_CAP defaults
#   to 80 here (override it: `CUDA_COMPUTE_CAP=90 bash scripts/check-cuda-build.sh`).
#
# The build goes to target/cuda (CARGO_TARGET_DIR overrides), apart from the CPU build.
# Time on 2 cores: ~2 min for the toolkit, then roughly 25–40 min for a cold build.
set -euo pipefail

install=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    -h | --help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "check-cuda-build: unknown argument '$arg' (expected --no-install or --help)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
started=$(date +%s)

find_nvcc() {
  for candidate in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

install_debian_toolkit() {
  if [ "$(id -u)" != 0 ]; then
    echo "check-cuda-build: installing the CUDA toolkit needs root (apt-get); run as root or install nvcc yourself" >&2
    exit 1
  fi
  if ! grep -qs 'bookworm\|trixie' /etc/os-release; then
    echo "check-cuda-build: no nvcc found and this is not Debian bookworm/trixie; install a CUDA toolkit >= 11.8 and put nvcc on PATH (or set CUDA_HOME)" >&2
    exit 1
  fi
  local suite
  suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
  local sources=/etc/apt/sources.list.d/cai-cuda.sources
  if ! grep -rqs 'non-free' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "check-cuda-build: adding Debian's contrib and non-free components in $sources"
    cat > "$sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nvidia-cuda-toolkit
}

if ! nvcc=$(find_nvcc); then
  if [ "$install" = 1 ]; then
    install_debian_toolkit
    nvcc=$(find_nvcc) || { echo "check-cuda-build: nvcc is still missing after the install" >&2; exit 1; }
  else
    echo "check-cuda-build: no nvcc on PATH, in \$CUDA_HOME or in /usr/local/cuda (and --no-install was given)" >&2
    exit 1
  fi
fi

version=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
major=${version%%.*}
minor=${version#*.}
if [ -z "$version" ] || [ "$major" -lt 11 ] || { [ "$major" = 11 ] && [ "$minor" -lt 8 ]; }; then
  echo "check-cuda-build: $nvcc is CUDA '$version'; cai needs CUDA >= 11.8 (bf16 kernels for sm_80/sm_90)" >&2
  exit 1
fi
export PATH="$(dirname "$nvcc"):$PATH"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/cuda}"
echo "check-cuda-build: nvcc $version ($nvcc), compute capability $CUDA_COMPUTE_CAP, target dir $CARGO_TARGET_DIR"

# The binary, then the GPU test module and the other test targets (compiled, not run: no GPU).
cargo build --release --features cuda -p cai-cli
cargo test --release --features cuda -p cai-model --no-run

elapsed=$(( $(date +%s) - started ))
echo "check-cuda-build: the cuda build compiled in $((elapsed / 60)) min $((elapsed % 60)) s: $CARGO_TARGET_DIR/release/cai"
