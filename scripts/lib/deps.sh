# shellcheck shell=bash
# Helpers for installing and locating the system tools Crier's scripts need (Debian/Ubuntu).
# Source it; it defines functions only and changes no shell options.
#
#   ensure_packages pkg...   install the Debian packages that are not installed yet
#   find_tool name           print the path of an executable, looking in PATH and the sbin dirs
#   as_root cmd...           run a command as root (directly, or through sudo)
#   ensure_cargo_deb         install the pinned cargo-deb when `cargo deb` is missing

# Set once `apt-get update` has run in this shell, so that it runs at most once per run.
_CRIER_APT_UPDATED=${_CRIER_APT_UPDATED:-0}

_deps_log() { printf '[deps] %s\n' "$*" >&2; }

# as_root cmd...: run cmd as root: directly when already root, otherwise through sudo.
as_root() {
    if [[ ${EUID:-$(id -u)} -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        _deps_log "error: need root to run: $*"
        _deps_log "run this script as root, or install sudo, or install the packages by hand"
        return 1
    fi
}

# _deps_installed pkg: true when dpkg reports the package as installed.
_deps_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'
}

# _deps_apt_get args...: non-interactive apt-get that waits for a dpkg lock held by another apt.
_deps_apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get -o DPkg::Lock::Timeout=600 "$@"
}

# ensure_packages pkg...: install with apt-get the packages that `dpkg -s` does not show as
# installed; `apt-get update` runs first, once per run.
ensure_packages() {
    local pkg
    local -a missing=()
    if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        _deps_log "notice: not a Debian-like system (no dpkg/apt-get); make sure these are installed: $*"
        return 0
    fi
    for pkg in "$@"; do
        _deps_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    _deps_log "installing: ${missing[*]}"
    if [[ $_CRIER_APT_UPDATED -eq 0 ]]; then
        _deps_apt_get update -q || return 1
        _CRIER_APT_UPDATED=1
    fi
    _deps_apt_get install -y -q --no-install-recommends "${missing[@]}" || return 1
}

# find_tool name: print the path of executable `name`, searching PATH and then the sbin
# directories (nginx lives in /usr/sbin, which is often not on a non-root user's PATH).
find_tool() {
    local name=$1 dir path
    if path=$(command -v "$name" 2>/dev/null) && [[ -n $path ]]; then
        printf '%s\n' "$path"
        return 0
    fi
    for dir in /usr/sbin /sbin /usr/local/sbin /usr/local/bin /usr/bin; do
        if [[ -x $dir/$name ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    _deps_log "error: $name not found (looked in PATH and /usr/sbin, /sbin, /usr/local/sbin)"
    return 1
}

# ensure_cargo_deb: install the cargo-deb release the package is built and tested with into
# ~/.cargo/bin, when `cargo deb` is missing or another version (about 3 minutes on 2 cores, once;
# CI keeps ~/.cargo/bin between runs). packaging/README.md names the same version.
ensure_cargo_deb() {
    local want=3.8.0 have
    have=$(cargo deb --version 2>/dev/null || true)
    if [[ $have == "cargo-deb $want" ]]; then
        return 0
    fi
    _deps_log "installing cargo-deb $want (found: ${have:-none})"
    cargo install --locked --version "$want" cargo-deb >&2
}
