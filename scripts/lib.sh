# shellcheck shell=bash
# Shared steps of scripts/setup.sh and scripts/test.sh. Sourced, not run.
# Target: Debian 12 (bookworm). Every step is idempotent and quick when already done.

QDEDUP_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QDEDUP_BUILD="$QDEDUP_ROOT/build"

# Debian packages the build, the tests and the demo need.
QDEDUP_PACKAGES=(
  cmake g++ make pkg-config
  libcli11-dev libspdlog-dev nlohmann-json3-dev catch2
  libssl-dev zlib1g-dev libzstd-dev libxxhash-dev
  qemu-utils jq python3 botan xxhash
  # dedup-offline's interop test reads persistent bitmaps back through qemu-nbd (qemu-utils)
  # with nbdinfo --map.
  libnbd-bin
  # scripts/bench-dedup-offline.sh compares with duperemove and takes peak RSS from GNU time.
  duperemove time
  # tests/cli/metrics.sh checks the Prometheus output with promtool (in Debian's prometheus).
  prometheus
  # The manual page is rendered by tests/cli/manpage.sh (groff, man); scripts/package.sh and
  # tests/cli/package.sh make the .deb with cpack, which needs dpkg-shlibdeps and file.
  groff-base man-db dpkg-dev file
  # The fuzz build (scripts/fuzz.sh): clang++ with libFuzzer and the sanitizer runtimes
  # (libclang-rt-14-dev), and llvm-symbolizer (llvm) for readable crash stacks.
  clang libclang-rt-14-dev llvm
)

log() { printf '==> %s\n' "$*"; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Prints the packages of QDEDUP_PACKAGES that are not installed, one a line.
missing_packages() {
  local p
  for p in "${QDEDUP_PACKAGES[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null)" != "ii " ]; then
      echo "$p"
    fi
  done
}

# Installs what is missing; runs apt-get only when something is.
install_packages() {
  command -v dpkg-query >/dev/null || die "dpkg-query not found: this script targets Debian 12"
  local missing
  mapfile -t missing < <(missing_packages)
  if [ ${#missing[@]} -eq 0 ]; then
    log "packages: all ${#QDEDUP_PACKAGES[@]} installed"
    return 0
  fi
  log "packages: installing ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "run as root (or install sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq || die "apt-get update failed"
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install failed for: ${missing[*]}"
  mapfile -t missing < <(missing_packages)
  [ ${#missing[@]} -eq 0 ] || die "still missing after apt-get install: ${missing[*]}"
}

# Configures (once) and builds into build/. The build type defaults to RelWithDebInfo
# (CMakeLists.txt); extra cmake arguments can be passed in QDEDUP_CMAKE_ARGS.
build_project() {
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  if [ ! -f "$QDEDUP_BUILD/CMakeCache.txt" ] || [ -n "${QDEDUP_CMAKE_ARGS:-}" ]; then
    log "configuring into $QDEDUP_BUILD"
    # shellcheck disable=SC2086  # QDEDUP_CMAKE_ARGS is a list of words
    cmake -S "$QDEDUP_ROOT" -B "$QDEDUP_BUILD" ${QDEDUP_CMAKE_ARGS:-} >/dev/null ||
      die "cmake configure failed (errors above)"
  fi
  log "building (make -j$jobs)"
  cmake --build "$QDEDUP_BUILD" -j "$jobs" || die "build failed (errors above)"
}

# The sanitizer build (ASan + UBSan, with g++) and the fuzz build (clang++, libFuzzer).
QDEDUP_BUILD_ASAN="$QDEDUP_ROOT/build-asan"
QDEDUP_BUILD_FUZZ="$QDEDUP_ROOT/build-fuzz"
# -O1 keeps the sanitizer builds quick to compile and run; no NDEBUG: asserts stay on.
QDEDUP_SANITIZER_FLAGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g")

# Runtime options of the sanitized binaries: leaks fail the run, any UBSan report aborts
# with a stack (the code is also compiled with -fno-sanitize-recover=all).
export_sanitizer_options() {
  export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
}

# build_in DIR TARGET CMAKE_ARGS...: configures DIR with CMAKE_ARGS (again only when they
# changed since the last configure) and builds TARGET ("all" for everything).
build_in() {
  local dir=$1 target=$2
  shift 2
  local jobs stamp="$dir/.qdedup-cmake-args"
  jobs=$(nproc 2>/dev/null || echo 2)
  if [ ! -f "$dir/CMakeCache.txt" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$*" ]; then
    log "configuring into $dir ($*)"
    cmake -S "$QDEDUP_ROOT" -B "$dir" "$@" >/dev/null || die "cmake configure of $dir failed"
    printf '%s' "$*" >"$stamp"
  fi
  log "building $target in $dir (-j$jobs)"
  cmake --build "$dir" -j "$jobs" --target "$target" || die "build of $dir failed (errors above)"
}

# Builds everything (qdedup, the unit tests, the fuzz replays) with ASan + UBSan.
build_asan() {
  build_in "$QDEDUP_BUILD_ASAN" all -DQDEDUP_SANITIZE=ON "${QDEDUP_SANITIZER_FLAGS[@]}"
}

# True when clang++ can link a libFuzzer target (libclang-rt-14-dev is installed).
have_fuzz_toolchain() {
  command -v clang++ >/dev/null 2>&1 || return 1
  printf 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }\n' |
    clang++ -x c++ -fsanitize=fuzzer,address,undefined -o /dev/null - >/dev/null 2>&1
}

# Builds the fuzz targets (tests/fuzz/) with clang++, libFuzzer, ASan and UBSan into
# build-fuzz. Extra cmake arguments (e.g. -DQDEDUP_FUZZ_SECONDS=30) may follow.
build_fuzz() {
  have_fuzz_toolchain || die "clang++ cannot link libFuzzer targets (packages clang, libclang-rt-14-dev)"
  build_in "$QDEDUP_BUILD_FUZZ" qdedup-fuzzers -DCMAKE_CXX_COMPILER=clang++ -DQDEDUP_FUZZ=ON \
    "${QDEDUP_SANITIZER_FLAGS[@]}" "$@"
}

# Makes the seed corpora in build-fuzz/corpus/seeds (scripts/fuzz-corpus.sh) unless they
# are there already; needs build/qdedup, which it builds if missing.
ensure_fuzz_seeds() {
  local seeds="$QDEDUP_BUILD_FUZZ/corpus/seeds"
  [ -d "$seeds/header" ] && return 0
  [ -x "$QDEDUP_BUILD/qdedup" ] || build_project
  log "making the fuzz seed corpora into $seeds"
  bash "$QDEDUP_ROOT/scripts/fuzz-corpus.sh" "$seeds" || die "scripts/fuzz-corpus.sh failed"
}

# The fuzz targets, as tests/fuzz/CMakeLists.txt lists them.
fuzz_targets() {
  sed -nE 's/^set\(QDEDUP_FUZZ_TARGETS (.*)\)$/\1/p' "$QDEDUP_ROOT/tests/fuzz/CMakeLists.txt"
}
