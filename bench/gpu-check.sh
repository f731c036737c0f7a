#!/usr/bin/env bash
# The trainer benchmark on a GPU machine, in one command (issue 14).
#
#   bench/gpu-check.sh [--cpu] [--direct] [--log-dir DIR] [-- TRAINER_BENCH_ARGS...]
#   bench/gpu-check.sh --refresh-deps
#
# What it does: builds only what trainer_bench needs (cmake -DMOESWEEP_BENCH_ONLY=ON: common, the shard
# reader, the trainer and trainer_bench; single-rank, so no MPI, and no tokenizer, SQLite or Ceres)
# into build-gpu-check/ against the LibTorch of the PyTorch that python3 imports, through its CMake
# config (torch.utils.cmake_prefix_path). Should that configure or build fail (its CUDA half wants
# nvcc and a complete CUDA toolkit), or with --direct, it builds into build-gpu-check-direct/ from
# LibTorch's headers and libraries directly instead (bench/torch_direct.cmake, the way
# torch.utils.cpp_extension builds: no nvcc needed). Then it runs
#
#   trainer_bench --device cuda --shape "512,8,8,512,64,gpt2" --warmup 3 --steps 10 --repeats 3
#
# (d_model 512, 8 layers, 8 heads, seq_len 512, 64 sequences = 32768 tokens a step, GPT-2 vocabulary,
# E = 1 and E = 8, bf16 on CUDA). What it prints: "gpu-check: ..." lines on the GPU, PyTorch, CUDA,
# compiler and which way it built; trainer_bench's header and table, one row per E with tokens/s
# (median of 3 measurements), MFU against 989 TFLOP/s (the H100/H200 SXM dense bf16 peak) and the
# peak GPU memory of a measurement (held by tensors, and reserved by LibTorch's caching allocator);
# then the most device memory nvidia-smi saw in use during the run, and the total time. Arguments
# after -- go to trainer_bench (e.g. -- --steps 20). A missing prerequisite or a failed step ends it
# with one "gpu-check: ..." line on stderr (a failed step's log tail follows) and a non-zero status.
# Planned, not yet measured: 2-3 minutes to build on 16 cores, about a minute to run.
#
# On the lent H200 through the device tool (its image has python3 with PyTorch 2.x for CUDA 13 and
# its CMake config, nvcc, a C++ compiler, CMake and ninja; nothing is installed there):
#
#   run(command="bash bench/gpu-check.sh --log-dir $OUT", carry=["bench/gpu-deps"], timeout_s=480)
#
# bench/gpu-deps/ (git-ignored, 1.5 MB) holds the header-only dependencies, CLI11 and nlohmann_json,
# as Debian packages them (headers and CMake configs), since the GPU machine has none of Debian's
# packages and no network. Make or refresh it here, before the run, with
# `bench/gpu-check.sh --refresh-deps` (copies the files of the installed libcli11-dev and
# nlohmann-json3-dev, which setup.sh installs). --log-dir DIR copies the configure, build and run logs
# to DIR ($OUT brings them back from the device machine).
#
# --cpu: the same reduced build (same CMake option, same carried dependencies, no MPI) against
# Debian's LibTorch 1.13 into build-gpu-check-cpu/ (with --direct: build-gpu-check-cpu-direct/), and
# the same table from a small CPU shape (--shape 128,2,4,128,8,gpt2, 2 timed steps): checks this
# script end to end on a machine without a GPU, in about 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly DEPS=bench/gpu-deps
started=$SECONDS

die() {
  echo "gpu-check: $*" >&2
  exit 1
}

# The copy of Debian's CLI11 and nlohmann_json (headers, CMake package configs) that travels with the
# working tree; their CMake configs locate the headers relative to themselves.
refresh_deps() {
  command -v dpkg >/dev/null || die "--refresh-deps needs dpkg (run it on the Debian development machine)"
  local package file
  for package in libcli11-dev nlohmann-json3-dev; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
      die "--refresh-deps needs $package installed (apt-get install libcli11-dev nlohmann-json3-dev)"
  done
  rm -rf "$DEPS"
  for package in libcli11-dev nlohmann-json3-dev; do
    dpkg -L "$package" | while read -r file; do
      case "$file" in /usr/include/* | /usr/share/cmake/*) ;; *) continue ;; esac
      [ -f "$file" ] || continue
      mkdir -p "$DEPS$(dirname "$file")"
      cp -p "$file" "$DEPS$file"
    done
  done
  dpkg-query -W -f='${Package} ${Version}\n' libcli11-dev nlohmann-json3-dev >"$DEPS/VERSIONS"
  echo "gpu-check: $DEPS refreshed ($(du -sh "$DEPS" | cut -f1)): $(tr '\n' ' ' <"$DEPS/VERSIONS")"
}

mode=cuda
direct=0
log_dir=""
bench_args=()
while (($#)); do
  case "$1" in
    --cpu) mode=cpu ;;
    --direct) direct=1 ;;
    --log-dir)
      (($# >= 2)) || die "--log-dir needs a directory"
      log_dir=$2
      shift
      ;;
    --refresh-deps)
      refresh_deps
      exit 0
      ;;
    --)
      shift
      bench_args=("$@")
      break
      ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *) die "unknown argument '$1' (see bench/gpu-check.sh --help)" ;;
  esac
  shift
done
[ -z "$log_dir" ] || mkdir -p "$log_dir" || die "cannot create the log directory $log_dir"

# Runs a step with its output in a log (copied to --log-dir). On failure says which step, shows the
# log's end and returns non-zero.
step() {
  local name=$1 log=$2 status=0
  shift 2
  "$@" >"$log" 2>&1 || status=$?
  [ -z "$log_dir" ] || cp "$log" "$log_dir/"
  if ((status != 0)); then
    echo "gpu-check: $name failed; the last lines of $log:" >&2
    tail -n 30 "$log" >&2
  fi
  return "$status"
}

# --- prerequisites: each missing one is one line ------------------------------------------------------
[ -f "$DEPS/usr/share/cmake/CLI11/CLI11Config.cmake" ] &&
  [ -f "$DEPS/usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake" ] ||
  die "$DEPS is missing or incomplete: run bench/gpu-check.sh --refresh-deps on the Debian machine, and carry $DEPS"

cxx=${CXX:-}
[ -n "$cxx" ] || cxx=$(command -v c++ || command -v g++ || command -v clang++ || true)
[ -n "$cxx" ] || die "no C++ compiler (c++, g++ or clang++; or set CXX)"

PYTHON=${PYTHON:-python3}
# CMake and ninja: on PATH, else the ones of pip's cmake and ninja packages.
cmake_bin=$(command -v cmake ||
  "$PYTHON" -c 'import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, "cmake"))' 2>/dev/null || true)
[ -n "$cmake_bin" ] && [ -x "$cmake_bin" ] || die "no cmake (on PATH or as python3's cmake package)"
cmake_version=$("$cmake_bin" --version | head -n 1 | awk '{print $3}')
printf '%s\n%s\n' 3.25 "$cmake_version" | sort -V -C || die "cmake $cmake_version is older than 3.25"
ninja_bin=$(command -v ninja ||
  "$PYTHON" -c 'import ninja, os; print(os.path.join(ninja.BIN_DIR, "ninja"))' 2>/dev/null || true)

common_args=(-DMOESWEEP_BENCH_ONLY=ON -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_CXX_COMPILER="$cxx"
  -DCLI11_DIR="$PWD/$DEPS/usr/share/cmake/CLI11"
  -Dnlohmann_json_DIR="$PWD/$DEPS/usr/share/cmake/nlohmann_json")
if [ -n "$ninja_bin" ] && [ -x "$ninja_bin" ]; then
  common_args+=(-G Ninja -DCMAKE_MAKE_PROGRAM="$ninja_bin")
fi
# CMake 4 refuses package configs that still declare compatibility with CMake < 3.5.
printf '%s\n%s\n' 4.0 "$cmake_version" | sort -V -C && common_args+=(-DCMAKE_POLICY_VERSION_MINIMUM=3.5)

# Two ways to LibTorch: its CMake config (config_args), or its headers and libraries directly
# (direct_args, bench/torch_direct.cmake), the fallback when the config fails.
config_args=()
direct_args=()
if [ "$mode" = cuda ]; then
  build="build-gpu-check"
  command -v "$PYTHON" >/dev/null || die "no $PYTHON (the interpreter with PyTorch; or set PYTHON)"
  mkdir -p "$build"
  # One line: version, CUDA version, C++11 ABI, CMake prefix, torch folder, GPU ("" when none is
  # usable), and the CUDA runtime headers of pip's nvidia packages ("" when none).
  torch_info=$("$PYTHON" -c '
import glob, os, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
headers = ""
try:
    import nvidia
    found = [os.path.dirname(h) for p in nvidia.__path__
             for h in glob.glob(os.path.join(p, "*", "include", "cuda_runtime_api.h"))]
    headers = found[0] if found else ""
except ImportError:
    pass
print(torch.__version__, torch.version.cuda, int(torch._C._GLIBCXX_USE_CXX11_ABI),
      torch.utils.cmake_prefix_path, os.path.dirname(torch.__file__), gpu, headers, sep="|")' \
    2>"$build/gpu-check-python.log") ||
    die "$PYTHON cannot import torch: $(tail -n 1 "$build/gpu-check-python.log")"
  IFS='|' read -r torch_version torch_cuda abi torch_prefix torch_dir gpu_name wheel_headers \
    <<<"$(tail -n 1 <<<"$torch_info")"
  [ "$torch_cuda" != None ] || die "PyTorch $torch_version was built without CUDA"
  [ -n "$gpu_name" ] || die "PyTorch $torch_version (CUDA $torch_cuda) sees no GPU (torch.cuda.is_available() is False)"
  [ -f "$torch_dir/lib/libtorch_cuda.so" ] || die "PyTorch $torch_version has no $torch_dir/lib/libtorch_cuda.so"
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
  fi
  nvcc_version=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([^,]*\),.*/\1/p' || true)
  # The CUDA runtime's headers (c10/cuda's headers include them): the toolkit's, else pip's.
  cuda_include=""
  for candidate in "$(dirname "$(command -v nvcc || echo /nonexistent/bin/nvcc)")/../include" \
    /usr/local/cuda/include "$wheel_headers"; do
    if [ -n "$candidate" ] && [ -f "$candidate/cuda_runtime_api.h" ]; then
      cuda_include=$(cd "$candidate" && pwd)
      break
    fi
  done
  case "$gpu_name" in
    *H100* | *H200*) peak_note="989 TFLOP/s, the $gpu_name's dense bf16 peak" ;;
    *) peak_note="989 TFLOP/s (H100/H200 dense bf16), NOT this $gpu_name's: pass -- --peak-tflops P" ;;
  esac
  # PyTorch's config enables CMake's CUDA language (so it needs nvcc); Hopper only, which also keeps it
  # from probing the GPU for its architecture.
  export TORCH_CUDA_ARCH_LIST=9.0
  if [ -f "$torch_prefix/Torch/TorchConfig.cmake" ] && [ -n "$nvcc_version" ]; then
    config_args=(-DCMAKE_PREFIX_PATH="$torch_prefix" -DCMAKE_CUDA_ARCHITECTURES=90)
  fi
  direct_args=(-DMOESWEEP_TORCH_DIRECT_INCLUDE="$torch_dir/include" -DMOESWEEP_TORCH_DIRECT_LIB="$torch_dir/lib"
    -DMOESWEEP_TORCH_CXX11_ABI="$abi" -DMOESWEEP_CUDA_INCLUDE_DIR="$cuda_include")
  run_args=(--device cuda --shape "512,8,8,512,64,gpt2" --warmup 3 --steps 10 --repeats 3)
  echo "gpu-check: GPU $gpu_name; PyTorch $torch_version (CUDA $torch_cuda, C++11 ABI $abi); nvcc ${nvcc_version:-not found}"
  if command -v nvidia-smi >/dev/null; then
    echo "gpu-check: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1)"
  fi
  echo "gpu-check: MFU against $peak_note"
  [ -n "${config_args[*]}" ] ||
    echo "gpu-check: no nvcc or no $torch_prefix/Torch/TorchConfig.cmake: using LibTorch's files directly"
else
  build="build-gpu-check-cpu"
  torch_config=$(ls -d /usr/lib/*/cmake/Torch 2>/dev/null | head -n 1 || true)
  torch_lib=$(dirname "$(ls /usr/lib/*/libtorch.so 2>/dev/null | head -n 1 || echo /nonexistent/x)")
  [ -n "$torch_config" ] && [ -f "$torch_config/TorchConfig.cmake" ] && [ -f "$torch_lib/libtorch.so" ] ||
    die "--cpu needs Debian's LibTorch (apt-get install libtorch-dev)"
  abi=1  # Debian builds LibTorch with GCC's default, the C++11 ABI
  config_args=(-DTorch_DIR="$torch_config")
  direct_args=(-DMOESWEEP_TORCH_DIRECT_INCLUDE=/usr/include -DMOESWEEP_TORCH_DIRECT_LIB="$torch_lib"
    -DMOESWEEP_TORCH_CXX11_ABI="$abi")
  run_args=(--device cpu --shape "128,2,4,128,8,gpt2" --warmup 1 --steps 2 --repeats 1 --no-python)
  echo "gpu-check: --cpu: Debian's LibTorch ($torch_config), no GPU"
fi
common_args+=(-DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=$abi")
((direct == 0)) || config_args=()
echo "gpu-check: $("$cxx" --version | head -n 1); cmake $cmake_version${ninja_bin:+; ninja $("$ninja_bin" --version)}"

# --- build: only trainer_bench and what it links ------------------------------------------------------
jobs=${JOBS:-$(nproc)}
build_in() {  # build folder, LibTorch arguments...
  local dir=$1
  shift
  mkdir -p "$dir"
  step "configure in $dir" "$dir/gpu-check-configure.log" "$cmake_bin" -S . -B "$dir" "${common_args[@]}" "$@" ||
    return 1
  grep -q "moesweep: trainer benchmark only" "$dir/gpu-check-configure.log" ||
    die "configure did not take the benchmark-only path (see $dir/gpu-check-configure.log)"
  step "build in $dir" "$dir/gpu-check-build.log" "$cmake_bin" --build "$dir" --target trainer_bench --parallel "$jobs"
}
if [ -n "${config_args[*]}" ] && build_in "$build" "${config_args[@]}"; then
  echo "gpu-check: LibTorch through its CMake config"
else
  [ -z "${config_args[*]}" ] || echo "gpu-check: falling back to LibTorch's headers and libraries directly"
  build=$build-direct
  build_in "$build" "${direct_args[@]}" || die "no build either way (logs above)"
  echo "gpu-check: LibTorch's headers and libraries used directly (bench/torch_direct.cmake)"
fi
echo "gpu-check: built $build/bench/trainer_bench in $((SECONDS - started)) s ($jobs jobs)"

# --- run ----------------------------------------------------------------------------------------------
run_log="$build/gpu-check-run.log"
sampler=""
if [ "$mode" = cuda ] && command -v nvidia-smi >/dev/null; then
  # Device memory in use, every 200 ms, as a cross-check of the allocator's figures.
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$build/gpu-check-memory.log" 2>&1 &
  sampler=$!
fi
echo "gpu-check: trainer_bench ${run_args[*]} ${bench_args[*]:-}"
echo
set +e
"$build/bench/trainer_bench" "${run_args[@]}" "${bench_args[@]}" 2>&1 | tee "$run_log"
status=${PIPESTATUS[0]}
set -e
if [ -n "$sampler" ]; then
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  most=$(grep -E '^[0-9]+$' "$build/gpu-check-memory.log" | sort -n | tail -n 1 || true)
  [ -z "$most" ] || echo "gpu-check: nvidia-smi: at most $most MiB of GPU memory in use during the run (CUDA context included)"
fi
[ -z "$log_dir" ] || cp "$run_log" "$log_dir/"
((status == 0)) || die "trainer_bench exited with status $status"
echo
echo "gpu-check: done in $((SECONDS - started)) s"
