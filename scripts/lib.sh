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
