#!/usr/bin/env bash
# Install Crier on this machine (or into $DESTDIR for packaging): both binaries, the systemd
# units, example environment files and the nginx production site.
#
# Usage: scripts/install.sh [--prefix DIR] [--no-build] [--bin-dir DIR] [--unit-dir DIR]
#        scripts/install.sh --uninstall
#
#   --prefix DIR    binaries go to DIR/bin (default /usr/local); the units' ExecStart= point there
#   --no-build      do not run cargo; take the binaries from target/release
#   --bin-dir DIR   take the binaries from DIR (implies --no-build)
#   --unit-dir DIR  where the units go (default /etc/systemd/system)
#   --uninstall     remove what an earlier run installed (listed in its manifest), nothing else
#   DESTDIR=DIR     (environment) install below DIR instead of /, as packaging does
#
# What goes where (all below $DESTDIR):
#   $PREFIX/bin/webserver, $PREFIX/bin/wsserver              replaced when they differ
#   /etc/systemd/system/crier-webserver.service,
#     crier-wsserver.service, crier-wsserver@.service,
#     crier-webserver.socket, crier-wsserver.socket,
#     crier-wsserver@.socket                                  replaced when they differ
#   /etc/crier/webserver.env, wsserver.env, wsserver-8082.env only when absent (mode 0600)
#   /etc/nginx/sites-available/crier.conf                     only when absent (not enabled)
#   /var/lib/crier/install-manifest                           what was installed, with checksums
#
# Running it twice changes nothing: a file is written only when its content differs. Files that
# are installed "only when absent" are never overwritten, so an operator's edits survive.
# --uninstall removes the files the manifest lists whose content is still what was installed;
# an edited file (for example an env file with your settings) is kept and reported.
# The units use DynamicUser=yes, so no service user is created.
# With DESTDIR empty and systemd running, `systemctl daemon-reload` follows every change.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINARIES=(webserver wsserver)
UNITS=(crier-webserver.service crier-wsserver.service crier-wsserver@.service
    crier-webserver.socket crier-wsserver.socket crier-wsserver@.socket)
ENV_FILES=(webserver.env wsserver.env wsserver-8082.env)
MANIFEST_PATH=/var/lib/crier/install-manifest

log() { printf '[install] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
UNIT_DIR=/etc/systemd/system
BUILD=1
BIN_DIR=
UNINSTALL=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --bin-dir) [[ $# -ge 2 ]] || die "--bin-dir needs a directory"; BIN_DIR=$2; BUILD=0; shift 2 ;;
        --bin-dir=*) BIN_DIR=${1#*=}; BUILD=0; shift ;;
        --unit-dir) [[ $# -ge 2 ]] || die "--unit-dir needs a directory"; UNIT_DIR=$2; shift 2 ;;
        --unit-dir=*) UNIT_DIR=${1#*=}; shift ;;
        --no-build) BUILD=0; shift ;;
        --uninstall) UNINSTALL=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ $PREFIX =~ ^/[A-Za-z0-9._/+-]*$ ]] || die "--prefix must be an absolute path of letters, digits and ._/+-: $PREFIX"
[[ $UNIT_DIR == /* ]] || die "--unit-dir must be an absolute path: $UNIT_DIR"
[[ -z $DESTDIR || $DESTDIR == /* ]] || die "DESTDIR must be an absolute path: $DESTDIR"
PREFIX=${PREFIX%/}
DESTDIR=${DESTDIR%/}
MANIFEST=$DESTDIR$MANIFEST_PATH
if [[ -n $DESTDIR && $UNINSTALL -eq 0 ]]; then
    mkdir -p "$DESTDIR"
fi

checksum() { sha256sum "$1" | cut -d' ' -f1; }

# Manifest lines, tab-separated: "file<TAB>sha256<TAB>path" or "dir<TAB>-<TAB>path"; paths are
# as on the target system (without DESTDIR). Kept in memory as an associative array.
declare -A ENTRY=()
declare -a ORDER=()
load_manifest() {
    [[ -f $MANIFEST ]] || return 0
    local kind sum path
    while IFS=$'\t' read -r kind sum path; do
        [[ -n $path && ( $kind == file || $kind == dir ) ]] || continue
        record "$kind" "$sum" "$path"
    done <"$MANIFEST"
}
record() {
    local key="$1"$'\t'"$3"
    [[ -n ${ENTRY[$key]+set} ]] || ORDER+=("$key")
    ENTRY[$key]=$2
}

CHANGED=0

# ensure_dir DIR: create DIR (a target path) and its missing parents; record the ones created.
ensure_dir() {
    local target=$1 path=
    local -a parts
    IFS=/ read -r -a parts <<<"${target#/}"
    for part in "${parts[@]}"; do
        path+=/$part
        if [[ ! -d $DESTDIR$path ]]; then
            mkdir -m 0755 "$DESTDIR$path"
            record dir - "$path"
            CHANGED=1
        fi
    done
}

# put SRC TARGET MODE: install SRC as TARGET unless TARGET already has the same content and mode.
# Written through a temporary file and a rename, so a running binary is replaced safely.
put() {
    local src=$1 target=$2 mode=$3 dest=$DESTDIR$2 sum
    sum=$(checksum "$src")
    ensure_dir "$(dirname "$target")"
    if [[ -f $dest && $(checksum "$dest") == "$sum" ]]; then
        [[ $(stat -c %a "$dest") == "${mode#0}" ]] || { chmod "$mode" "$dest"; CHANGED=1; }
        log "unchanged: $target"
    else
        install -m "$mode" "$src" "$dest.crier-new"
        mv -f "$dest.crier-new" "$dest"
        log "installed: $target"
        CHANGED=1
    fi
    record file "$sum" "$target"
}

# put_if_absent SRC TARGET MODE: install SRC as TARGET only when TARGET does not exist. Only a file
# this script created is recorded, with the checksum of what it wrote (kept across re-runs).
put_if_absent() {
    local src=$1 target=$2 mode=$3 dest=$DESTDIR$2
    if [[ -e $dest || -L $dest ]]; then
        local key=file$'\t'$target
        if [[ -n ${ENTRY[$key]+set} ]]; then
            log "kept (installed earlier, never overwritten): $target"
        else
            log "kept (not installed by this script): $target"
        fi
        return 0
    fi
    ensure_dir "$(dirname "$target")"
    install -m "$mode" "$src" "$dest"
    record file "$(checksum "$src")" "$target"
    log "installed: $target"
    CHANGED=1
}

write_manifest() {
    local tmp key
    ensure_dir "$(dirname "$MANIFEST_PATH")"
    tmp=$(mktemp)
    {
        printf '# Crier install manifest, written by scripts/install.sh; used by --uninstall.\n'
        for key in "${ORDER[@]}"; do
            printf '%s\t%s\t%s\n' "${key%%$'\t'*}" "${ENTRY[$key]}" "${key#*$'\t'}"
        done
    } >"$tmp"
    if [[ -f $MANIFEST ]] && cmp -s "$tmp" "$MANIFEST"; then
        rm -f "$tmp"
    else
        install -m 0644 "$tmp" "$MANIFEST"
        rm -f "$tmp"
        CHANGED=1
    fi
}

systemd_live() { [[ -z $DESTDIR && -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

daemon_reload() {
    if systemd_live; then
        log "systemctl daemon-reload"
        systemctl daemon-reload
    fi
}

do_install() {
    local src_dir name
    if [[ $BUILD -eq 1 ]]; then
        command -v cargo >/dev/null || die "cargo not found (install Rust, or use --bin-dir DIR)"
        log "building: cargo build --release --locked"
        (cd "$ROOT" && cargo build --release --locked --bin webserver --bin wsserver)
        src_dir=$ROOT/target/release
    else
        src_dir=${BIN_DIR:-$ROOT/target/release}
    fi
    for name in "${BINARIES[@]}"; do
        [[ -x $src_dir/$name ]] || die "$src_dir/$name not found (build first, or pass --bin-dir)"
    done

    load_manifest
    for name in "${BINARIES[@]}"; do
        put "$src_dir/$name" "$PREFIX/bin/$name" 0755
    done

    RENDER_DIR=$(mktemp -d)
    trap 'rm -rf "$RENDER_DIR"' EXIT
    for name in "${UNITS[@]}"; do
        # The shipped units name the Debian package's /usr/bin/crier-NAME; render $PREFIX/bin/NAME.
        sed "s#/usr/bin/crier-#$PREFIX/bin/#g" "$ROOT/systemd/$name" >"$RENDER_DIR/$name"
        put "$RENDER_DIR/$name" "$UNIT_DIR/$name" 0644
    done
    for name in "${ENV_FILES[@]}"; do
        put_if_absent "$ROOT/systemd/env/$name" "/etc/crier/$name" 0600
    done
    put_if_absent "$ROOT/nginx/crier-production.conf" /etc/nginx/sites-available/crier.conf 0644
    write_manifest

    log "service user: none needed (the units use DynamicUser=yes)"
    if [[ $CHANGED -eq 1 ]]; then
        daemon_reload
    else
        log "nothing changed"
    fi
    if [[ -z $DESTDIR ]]; then
        log "next: edit /etc/crier/*.env and /etc/nginx/sites-available/crier.conf, then"
        log "  systemctl enable --now crier-webserver crier-wsserver crier-wsserver@8082   (their sockets too: Also=)"
        log "  ln -s ../sites-available/crier.conf /etc/nginx/sites-enabled/ && nginx -t && systemctl reload nginx"
    fi
}

do_uninstall() {
    local key kind path sum dest
    local -a units=() enabled=()
    [[ -f $MANIFEST ]] || die "no manifest at $MANIFEST: nothing was installed here by this script"
    load_manifest

    if systemd_live; then
        # Stop the services and their sockets and remove the enablement links `systemctl enable`
        # made, so that no link is left pointing at a removed unit.
        mapfile -t units < <(systemctl list-units --all --plain --no-legend 'crier-webserver.service' \
            'crier-wsserver.service' 'crier-wsserver@*.service' 'crier-webserver.socket' \
            'crier-wsserver.socket' 'crier-wsserver@*.socket' | awk '{print $1}')
        mapfile -t enabled < <(systemctl list-unit-files --plain --no-legend 'crier-*' | awk '$2 == "enabled" {print $1}')
        if [[ ${#units[@]} -gt 0 ]]; then
            log "stopping: ${units[*]}"
            systemctl stop "${units[@]}" || true
        fi
        if [[ ${#enabled[@]} -gt 0 ]]; then
            log "disabling: ${enabled[*]}"
            systemctl disable "${enabled[@]}" || true
        fi
        # Enabled template instances are links in *.wants directories, named after the template.
        find /etc/systemd/system \( -path '*.wants/crier-wsserver@*.service' -o -path '*.wants/crier-wsserver@*.socket' \) -type l \
            -exec sh -c 'for l; do echo "[install] disabling: $(basename "$l")" >&2; rm -f "$l"; done' sh {} +
    fi

    local -a dirs=()
    for key in "${ORDER[@]}"; do
        kind=${key%%$'\t'*}
        path=${key#*$'\t'}
        sum=${ENTRY[$key]}
        dest=$DESTDIR$path
        if [[ $kind == dir ]]; then
            dirs=("$path" "${dirs[@]}")
            continue
        fi
        if [[ ! -e $dest ]]; then
            log "already gone: $path"
        elif [[ $path == /etc/nginx/sites-available/* && -L $DESTDIR/etc/nginx/sites-enabled/$(basename "$path") ]]; then
            log "kept (enabled in sites-enabled; disable it first): $path"
        elif [[ $(checksum "$dest") != "$sum" ]]; then
            log "kept (changed since it was installed): $path"
        else
            rm -f "$dest"
            log "removed: $path"
        fi
    done
    rm -f "$MANIFEST"
    log "removed: $MANIFEST_PATH"
    # Directories this script created, deepest first, when nothing else is left in them.
    local -a sorted
    mapfile -t sorted < <(printf '%s\n' "${dirs[@]}" | awk '{print length($0) "\t" $0}' | sort -rn | cut -f2-)
    for path in "${sorted[@]}"; do
        [[ -n $path ]] || continue
        if rmdir "$DESTDIR$path" 2>/dev/null; then
            log "removed directory: $path"
        elif [[ -d $DESTDIR$path ]]; then
            log "kept directory (not empty): $path"
        fi
    done
    daemon_reload
}

if [[ $UNINSTALL -eq 1 ]]; then
    do_uninstall
else
    do_install
fi
