#!/usr/bin/env bash
# Build a real llama.cpp `llama-server` from the llama.cpp tree vendored in the
# llama-cpp-python sdist on PyPI (the only place we may fetch source from), and
# cache it outside the clone:
#
#   ${LANEGATE_CACHE:-$HOME/.cache/lanegate}/llama-server-<version>/
#     bin/llama-server        statically linked against llama/ggml
#     vocab/ggml-vocab-*.gguf vocab-only GGUF files (tokenizer metadata, no weights)
#     BUILD_INFO              version, sdist sha256, cmake flags, build time
#
# Idempotent: when the cached binary exists and answers --version, this prints
# its path and exits 0 at once.  Otherwise it builds in a temporary directory
# beside the cache and renames it into place, so an interrupted build never
# leaves a half-populated cache.  The last line of stdout is always the path of
# the binary.  Progress goes to stderr.
#
# Environment:
#   LANEGATE_CACHE   cache root (default $HOME/.cache/lanegate)
#   PYTHON           python used for `pip download` (default python3)
#   LLAMA_CPP_SDIST  path to an already downloaded sdist (optional; its sha256 is checked)
#   LLAMA_CPP_SDIST_DIR  directory that may hold a downloaded sdist (default /tmp/dl);
#                    used only as a shortcut when its sha256 matches
#   BUILD_JOBS       parallel compile jobs (default 2)
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
# sha256 of llama_cpp_python-0.3.36.tar.gz as served by PyPI.
LLAMA_CPP_PYTHON_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

CACHE_ROOT="${LANEGATE_CACHE:-$HOME/.cache/lanegate}"
CACHE_DIR="${CACHE_ROOT}/llama-server-${LLAMA_CPP_PYTHON_VERSION}"
BIN="${CACHE_DIR}/bin/llama-server"
PYTHON="${PYTHON:-python3}"
BUILD_JOBS="${BUILD_JOBS:-2}"
SDIST_NAME="llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz"

log() { printf '[build_llama_server] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cached_ok() {
    [[ -x "${BIN}" ]] && "${BIN}" --version >/dev/null 2>&1
}

# Fast path: nothing to do.
if cached_ok; then
    echo "${BIN}"
    exit 0
fi

# --- prerequisites ----------------------------------------------------------
if ! command -v cmake >/dev/null 2>&1; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "cmake not found; installing it with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >&2
    else
        die "cmake is required (>= 3.18) to build llama-server; install it (e.g. apt-get install cmake)"
    fi
fi
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 \
    || die "a C++17 compiler (g++) is required to build llama-server"
command -v tar >/dev/null 2>&1 || die "tar is required"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is required"

mkdir -p "${CACHE_ROOT}"

# --- serialise concurrent builds (e.g. parallel test workers) ---------------
LOCK_FILE="${CACHE_ROOT}/.llama-server-${LLAMA_CPP_PYTHON_VERSION}.lock"
if command -v flock >/dev/null 2>&1; then
    exec 9>"${LOCK_FILE}"
    if ! flock -n 9; then
        log "another build holds ${LOCK_FILE}; waiting for it"
        flock 9
    fi
    if cached_ok; then
        echo "${BIN}"
        exit 0
    fi
    # We hold the lock, so any work dir left here is from a build that was
    # killed outright (SIGKILL, power loss); it can be ~1 GB, so remove it.
    rm -rf "${CACHE_ROOT}/.build-llama-server-${LLAMA_CPP_PYTHON_VERSION}".*
fi

# The work dir lives beside the cache dir so the final `mv` is a rename on
# the same filesystem.
WORK="$(mktemp -d "${CACHE_ROOT}/.build-llama-server-${LLAMA_CPP_PYTHON_VERSION}.XXXXXX")"
cleanup() { rm -rf "${WORK}"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

START=$(date +%s)

# --- source -----------------------------------------------------------------
SDIST=""
for candidate in "${LLAMA_CPP_SDIST:-}" "${LLAMA_CPP_SDIST_DIR:-/tmp/dl}/${SDIST_NAME}"; do
    [[ -n "${candidate}" && -f "${candidate}" ]] || continue
    if [[ "$(sha256sum "${candidate}" | cut -d' ' -f1)" == "${LLAMA_CPP_PYTHON_SHA256}" ]]; then
        SDIST="${candidate}"
        log "using local sdist ${SDIST}"
        break
    fi
    log "ignoring ${candidate}: sha256 mismatch"
done
if [[ -z "${SDIST}" ]]; then
    log "downloading llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION} sdist (~76 MB) with pip"
    "${PYTHON}" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -d "${WORK}/dl" >&2 \
        || die "pip download of llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION} failed"
    SDIST="${WORK}/dl/${SDIST_NAME}"
    [[ -f "${SDIST}" ]] || die "pip download did not produce ${SDIST_NAME}"
    [[ "$(sha256sum "${SDIST}" | cut -d' ' -f1)" == "${LLAMA_CPP_PYTHON_SHA256}" ]] \
        || die "sha256 mismatch for downloaded ${SDIST_NAME}"
fi

SRC="${WORK}/llama.cpp"
mkdir -p "${SRC}"
log "extracting vendor/llama.cpp"
tar -xzf "${SDIST}" -C "${SRC}" --strip-components=3 \
    "llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp"
[[ -f "${SRC}/CMakeLists.txt" ]] || die "vendor/llama.cpp missing from ${SDIST_NAME}"
rm -rf "${WORK}/dl"
# The vendored tree carries a `.git` file pointing at a submodule dir that is
# not in the sdist; drop it and stop git from finding any enclosing repo.
rm -f "${SRC}/.git"
export GIT_CEILING_DIRECTORIES="${WORK}"

# --- configure --------------------------------------------------------------
# Portable x86-64-v3 instead of -march=native, so a cache copied to another
# machine of the same kind never dies with SIGILL.  Baseline if no AVX2.
CPU_FLAGS=()
if [[ "$(uname -m)" == "x86_64" ]]; then
    CPU_FLAGS+=(-DGGML_NATIVE=OFF)
    if grep -qw avx2 /proc/cpuinfo 2>/dev/null && grep -qw fma /proc/cpuinfo \
        && grep -qw f16c /proc/cpuinfo && grep -qw bmi2 /proc/cpuinfo; then
        CPU_FLAGS+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
    fi
fi

CMAKE_FLAGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_COMMON=ON
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_UI=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_LLGUIDANCE=OFF
    -DGGML_OPENMP=ON
    -DGGML_BACKEND_DL=OFF
    -DGGML_CCACHE=OFF
    "${CPU_FLAGS[@]}"
)

log "configuring: cmake ${CMAKE_FLAGS[*]}"
cmake -S "${SRC}" -B "${WORK}/build" -Wno-dev "${CMAKE_FLAGS[@]}" >"${WORK}/configure.log" 2>&1 \
    || { tail -n 40 "${WORK}/configure.log" >&2; die "cmake configure failed"; }

log "building target llama-server with -j${BUILD_JOBS} (takes several minutes on 2 cores)"
cmake --build "${WORK}/build" --target llama-server -j "${BUILD_JOBS}" >"${WORK}/build.log" 2>&1 \
    || { tail -n 60 "${WORK}/build.log" >&2; die "build failed"; }

BUILT="${WORK}/build/bin/llama-server"
[[ -x "${BUILT}" ]] || die "build finished but ${BUILT} is missing"
"${BUILT}" --version >/dev/null 2>&1 || die "built llama-server does not run --version"

# --- assemble the cache dir, then move it into place -------------------------
STAGE="${WORK}/stage"
mkdir -p "${STAGE}/bin" "${STAGE}/vocab"
install -m 0755 "${BUILT}" "${STAGE}/bin/llama-server"
strip "${STAGE}/bin/llama-server" 2>/dev/null || true
cp "${SRC}"/models/ggml-vocab-*.gguf "${STAGE}/vocab/"
[[ -f "${STAGE}/vocab/ggml-vocab-llama-spm.gguf" ]] || die "ggml-vocab-llama-spm.gguf missing"

END=$(date +%s)
ELAPSED=$((END - START))
{
    echo "llama_cpp_python_version=${LLAMA_CPP_PYTHON_VERSION}"
    echo "sdist_sha256=${LLAMA_CPP_PYTHON_SHA256}"
    echo "llama_server_version=$("${BUILT}" --version 2>&1 | tr '\n' ' ')"
    echo "cmake_flags=${CMAKE_FLAGS[*]}"
    echo "build_jobs=${BUILD_JOBS}"
    echo "build_seconds=${ELAPSED}"
    echo "built_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"${STAGE}/BUILD_INFO"

# A broken leftover (binary missing or not runnable) is replaced.
if [[ -e "${CACHE_DIR}" ]]; then
    mv "${CACHE_DIR}" "${WORK}/old"
fi
mv "${STAGE}" "${CACHE_DIR}"

log "built llama-server in ${ELAPSED}s ($((ELAPSED / 60))m$((ELAPSED % 60))s)"
echo "${BIN}"
