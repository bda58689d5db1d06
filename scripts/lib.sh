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
# Cargo's target directory, one per checkout like the artifacts (rig_platform): cargo copies a
# binary to target/<profile>/ only when it rebuilds it, so in a directory shared by two checkouts
# the one whose build is current would run the binary (GPU model, guest tests) that the other
# checkout built last.
CARGO_TARGET=$CACHE/target/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)

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

# The rig kernel, for every script: RIG_ARCH (x86_64, the default, or arm64: the emulated Grace),
# RIG_PAGE_SIZE (4k, the default, or 64k; arm64 only) and RIG_FLAVOUR (unset or empty for the rig
# kernel, "debug" for the same sources with the checkers of scripts/kconfig/debug.config: lockdep,
# KASAN, kmemleak; `make check-debug`; x86_64 only). Each combination has its own kernel build
# (its fragments join build-kernel's key) and its own artifacts directory (the modules and test
# programs built against that kernel). scripts/vm-run sets the first two from --arch and
# --page-size (and calls rig_select again).
rig_select() {
	RIG_ARCH=${RIG_ARCH:-x86_64}
	RIG_PAGE_SIZE=${RIG_PAGE_SIZE:-4k}
	RIG_FLAVOUR=${RIG_FLAVOUR:-}
	export RIG_ARCH RIG_PAGE_SIZE RIG_FLAVOUR
	# Artifacts are per checkout too: two checkouts (a clean clone running `make check` beside
	# the working tree) must never run each other's module builds.
	local art_base
	art_base=$CACHE/artifacts/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
	case "$RIG_ARCH/$RIG_PAGE_SIZE" in
	x86_64/4k) KERNEL_FRAGMENTS=() ARTIFACTS=$art_base/x86_64 ;;
	arm64/4k) KERNEL_FRAGMENTS=() ARTIFACTS=$art_base/arm64-4k ;;
	arm64/64k) KERNEL_FRAGMENTS=("$ROOT/scripts/kconfig/arm64-64k.config") ARTIFACTS=$art_base/arm64-64k ;;
	*) die "RIG_ARCH/RIG_PAGE_SIZE must be x86_64/4k, arm64/4k or arm64/64k, not '$RIG_ARCH/$RIG_PAGE_SIZE'" ;;
	esac
	case "$RIG_FLAVOUR" in
	"") ;;
	debug)
		[ "$RIG_ARCH" = x86_64 ] || die "the debug flavour is an x86_64 kernel"
		KERNEL_FRAGMENTS+=("$ROOT/scripts/kconfig/debug.config") ARTIFACTS=$art_base/x86_64-debug ;;
	*) die "RIG_FLAVOUR must be empty or debug, not '$RIG_FLAVOUR'" ;;
	esac
	# The kernel's ARCH, the Rust target of the guest's programs, and Debian's name of the
	# architecture (for its packages).
	case "$RIG_ARCH" in
	x86_64) KARCH=x86 GUEST_TARGET=x86_64-unknown-linux-gnu DEB_ARCH=amd64 ;;
	arm64) KARCH=arm64 GUEST_TARGET=aarch64-unknown-linux-gnu DEB_ARCH=arm64 ;;
	esac
	# The module is built in the checkout for the x86_64 rig kernel (what `make` in the checkout
	# does), and in a copy of the sources for every other kernel: objects built against one kernel
	# must never be taken for another's.
	[ "$RIG_ARCH/$RIG_PAGE_SIZE/$RIG_FLAVOUR" = x86_64/4k/ ] && MODULE_TREE=$ROOT || MODULE_TREE=$ARTIFACTS/module
}
rig_select

# rig_kernel: builds (if needed) the rig kernel selected above and prints its build directory.
rig_kernel() { "$ROOT/scripts/build-kernel" "$RIG_ARCH" "${KERNEL_FRAGMENTS[@]}"; }
# rig_kernel_if_built: prints that build directory if the build is complete, else fails; never
# builds anything.
rig_kernel_if_built() { "$ROOT/scripts/build-kernel" --print-if-built "$RIG_ARCH" "${KERNEL_FRAGMENTS[@]}"; }

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
