# SPDX-License-Identifier: GPL-2.0
#
# Build the module against a Rust-enabled kernel build tree:
#   make [KDIR=<kernel build dir>] [LLVM=-19]
# KDIR defaults to the running kernel's build tree or, when there is none, to the test rig's cached
# kernel (scripts/build-kernel). `make CLIPPY=1` builds with Clippy.
#
# Install it for that kernel, where modprobe prefers it to the in-tree module of the same name:
#   make install     modules_install into /lib/modules/<release>/updates/, then depmod
#   make uninstall   remove it from there, then depmod (the in-tree module is found again)
# Both honour INSTALL_MOD_PATH (a staging root) and KDIR. DKMS: dkms.conf (Documentation/debian.md).
#
# Before Kbuild runs, the tree and the toolchain are checked (one line each, cause and fix): a
# Linux 7.3 kernel, CONFIG_RUST=y, the Rust metadata in the tree (rust/libkernel.rmeta: a headers
# package such as Debian's has none), and the rustc and bindgen the kernel was built with
# (CONFIG_RUSTC_VERSION_TEXT, CONFIG_BINDGEN_VERSION_TEXT; override with RUSTC=, BINDGEN=).
#
# The test rig (see README.md):
#   make demo     boot the guest, bind the emulated GH200 to this driver, show what a user sees;
#                 `make demo ARCH=arm64 [PAGE_SIZE=64k]` on the emulated Grace (arm64)
#   make check    every test; ends with "N passed, N failed"
#   make check-debug  the same on the debug kernel (scripts/kconfig/debug.config: lockdep, KASAN,
#                 kmemleak), with a kmemleak scan after every guest run
#   make bench    benchmarks, the Rust driver against upstream (not a test; Documentation/performance.md);
#                 BENCH_ARGS="--reps N --rounds N --out DIR" passes options to scripts/bench
#   make mutants  mutation testing of src/ (not a test; needs cargo-mutants and a built rig):
#                 MUTANTS_ARGS="--seed N --sample N" (Documentation/mutants.md)

KDIR ?= $(firstword $(wildcard /lib/modules/$(shell uname -r)/build) \
	$(shell scripts/build-kernel --print-if-built x86_64 2>/dev/null))
# The kernel's own LLVM setting (LLVM=-<clang major>), read from its configuration, unless given.
LLVM ?= $(shell sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)[0-9][0-9][0-9][0-9]$$/-\1/p' \
	$(KDIR)/.config 2>/dev/null)

KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) $(if $(LLVM),LLVM=$(LLVM))

# The kernel releases the module supports: it uses Linux 7.3's VFIO API.
SUPPORTED_SERIES := 7.3
KRELEASE = $(shell cat $(KDIR)/include/config/kernel.release 2>/dev/null)
kconfig = $(shell sed -n 's/^$(1)=//p' $(KDIR)/.config 2>/dev/null)
kconfig_text = $(shell sed -n 's/^$(1)="\(.*\)"$$/\1/p' $(KDIR)/.config 2>/dev/null)
# The rustc and bindgen Kbuild will run: the kernel's Makefile uses plain `rustc` and `bindgen`
# from PATH unless they are given on the command line.
preflight_rustc = $(if $(filter command line,$(origin RUSTC)),$(RUSTC),rustc)
preflight_bindgen = $(if $(filter command line,$(origin BINDGEN)),$(BINDGEN),bindgen)
preflight_rustc_text = $(shell $(preflight_rustc) --version 2>/dev/null | head -n1)
# $(call same,A,B): non-empty when the strings A and B are equal and not empty.
same = $(and $(findstring $(1),$(2)),$(findstring $(2),$(1)))
kernel_rustc = $(call kconfig_text,CONFIG_RUSTC_VERSION_TEXT)
kernel_bindgen = $(call kconfig_text,CONFIG_BINDGEN_VERSION_TEXT)
preflight_bindgen_text = $(shell $(preflight_bindgen) --version 2>/dev/null | head -n1)

.PHONY: all modules clean install uninstall preflight demo check check-debug bench mutants kdir
all modules: preflight
	$(KMAKE) modules

# Each check stops make with one line (make's "*** ...  Stop."); they are expanded only when a
# build or an install runs.
preflight: kdir
	$(if $(wildcard $(KDIR)/.config),,$(error $(KDIR) has no .config: not a kernel build tree; pass KDIR=<the kernel's build directory>, e.g. /lib/modules/<release>/build))
	$(if $(filter $(SUPPORTED_SERIES).%,$(KRELEASE)),,$(error kernel $(or $(KRELEASE),<no release in $(KDIR)/include/config/kernel.release>) is not supported: the module needs Linux $(SUPPORTED_SERIES)'s VFIO API (supported releases: $(SUPPORTED_SERIES).x); build it against a $(SUPPORTED_SERIES) kernel (Debian 13: apt install -t trixie-backports linux-image-<arch>)))
	$(if $(filter y,$(call kconfig,CONFIG_RUST)),,$(error $(KRELEASE) is built without CONFIG_RUST: no Rust module can be loaded into it; use a $(SUPPORTED_SERIES) kernel built with CONFIG_RUST=y (Debian's trixie-backports kernels are), or upstream's C nvgrace-gpu-vfio-pci))
	$(if $(wildcard $(KDIR)/rust/libkernel.rmeta),,$(error $(KDIR) has no Rust metadata (rust/libkernel.rmeta): headers packages (Debian's linux-headers-*) ship none; on Debian build with sudo scripts/debian-kbuild --build-module $(KRELEASE) or install the DKMS package, elsewhere use the kernel's own build tree))
	$(if $(call same,$(kernel_rustc),$(preflight_rustc_text)),,$(error $(preflight_rustc) is '$(or $(preflight_rustc_text),missing)' but $(KRELEASE) was built with '$(kernel_rustc)': Rust modules build only with the kernel's own rustc; put it first on PATH or pass RUSTC=<path> (rustup: RUSTUP_TOOLCHAIN=$(word 2,$(kernel_rustc)))))
	$(if $(call same,$(kernel_bindgen),$(preflight_bindgen_text)),,$(error $(preflight_bindgen) is '$(or $(preflight_bindgen_text),missing)' but $(KRELEASE) was built with '$(kernel_bindgen)': install that bindgen (cargo install --locked bindgen-cli --version $(word 2,$(kernel_bindgen))) or pass BINDGEN=<path>))
	@:

# INSTALL_MOD_DIR=updates: depmod's default search order (updates before the kernel's own
# directories) then makes modprobe load this module rather than the in-tree C module of the same
# name. modules_install runs depmod itself (with INSTALL_MOD_PATH as its base).
MODDIR = $(INSTALL_MOD_PATH)/lib/modules/$(KRELEASE)
install: all
	$(KMAKE) INSTALL_MOD_DIR=updates modules_install

# Removes what install put there, and the updates/ directory if that leaves it empty; depmod then
# indexes the in-tree module again.
uninstall: kdir
	@test -n "$(KRELEASE)" || { echo "$(KDIR) has no include/config/kernel.release" >&2; exit 1; }
	rm -f $(foreach c,.ko .ko.gz .ko.xz .ko.zst,$(MODDIR)/updates/nvgrace-gpu-vfio-pci$(c))
	rmdir $(MODDIR)/updates 2>/dev/null || true
	depmod $(if $(INSTALL_MOD_PATH),-b $(INSTALL_MOD_PATH)) $(KRELEASE)

clean: kdir
	$(KMAKE) clean

kdir:
	@test -n "$(KDIR)" || { echo "no kernel build tree: pass KDIR=<dir> or run scripts/build-kernel" >&2; exit 1; }

demo:
	scripts/demo $(if $(ARCH),--arch $(ARCH)) $(if $(PAGE_SIZE),--page-size $(PAGE_SIZE))

check:
	scripts/check

check-debug:
	RIG_FLAVOUR=debug scripts/check

bench:
	scripts/bench $(BENCH_ARGS)

mutants:
	scripts/mutants $(MUTANTS_ARGS)
