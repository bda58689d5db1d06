# SPDX-License-Identifier: GPL-2.0
# Shared settings for the rig scripts. Source it; do not run it.
#
# Everything the rig builds or downloads lives in one cache directory outside the repository,
# $NVGRACE_CACHE (default ~/.cache/nvgrace-gpu-vfio-pci). Each step writes its output under a
# directory named after a key of its inputs, so a step is skipped when its output is current and
# redone when any input changes.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${NVGRACE_CACHE:-${HOME:-/root}/.cache/nvgrace-gpu-vfio-pci}
mkdir -p "$CACHE"

# Kernel source: the Debian package linux-source-7.3 from trixie-backports. KERNEL_VERSION is the
# version the rig is verified with; fetch-kernel falls back to the newest 7.3.x with a warning.
KERNEL_SERIES=7.3
KERNEL_VERSION=${KERNEL_VERSION:-7.3.4}

# Toolchain: LLVM 19 from bookworm builds Linux 7.3 with Rust.
LLVM_SUFFIX=-19
# bindgen-cli, pinned: the version `make rustavailable` was checked with.
BINDGEN_VERSION=0.72.1

export PATH="${HOME:-/root}/.cargo/bin:$PATH"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
warn() { log "warning: $*"; }

# The rig kernel's flavour, for every script: RIG_FLAVOUR unset or empty for the rig kernel,
# "debug" for the same sources with the checkers of scripts/kconfig/debug.config (lockdep, KASAN,
# kmemleak; `make check-debug`). Each flavour has its own kernel build (the fragment joins
# build-kernel's key) and its own artifacts directory (the modules and test programs built
# against that kernel).
RIG_FLAVOUR=${RIG_FLAVOUR:-}
case "$RIG_FLAVOUR" in
"") FLAVOUR_FRAGMENTS=() ARTIFACTS=$CACHE/artifacts ;;
debug) FLAVOUR_FRAGMENTS=("$ROOT/scripts/kconfig/debug.config") ARTIFACTS=$CACHE/artifacts-debug ;;
*) die "RIG_FLAVOUR must be empty or debug, not '$RIG_FLAVOUR'" ;;
esac

# rig_kernel: builds (if needed) the x86_64 kernel of the flavour and prints its build directory.
rig_kernel() { "$ROOT/scripts/build-kernel" x86_64 "${FLAVOUR_FRAGMENTS[@]}"; }

# hash_of FILE...: a short content hash of the given files (and strings given as "=text").
hash_of() {
	local a
	for a in "$@"; do
		case "$a" in
		=*) printf '%s\n' "${a#=}" ;;
		*) cat "$a" ;;
		esac
	done | sha256sum | cut -c1-16
}

# The Debian mirror the host already uses (from its deb822 sources), for trixie and debootstrap.
debian_mirror() {
	local uri
	uri=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	[ -n "$uri" ] || uri=$(awk '/^deb / && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^http/) { print $i; exit } }' /etc/apt/sources.list 2>/dev/null || true)
	[ -n "$uri" ] || die "cannot find the Debian mirror in /etc/apt/sources.list.d/debian.sources"
	printf '%s\n' "$uri"
}
