# SPDX-License-Identifier: GPL-2.0
#
# Build the module against a Rust-enabled kernel build tree:
#   make [KDIR=<kernel build dir>] [LLVM=-19]
# KDIR defaults to the running kernel's build tree or, when there is none, to the test rig's cached
# kernel (scripts/build-kernel). `make CLIPPY=1` builds with Clippy.
#
# The test rig (see README.md):
#   make demo     boot the guest, bind the emulated GH200 to this driver, show what a user sees;
#                 `make demo ARCH=arm64 [PAGE_SIZE=64k]` on the emulated Grace (arm64)
#   make check    every test; ends with "N passed, N failed"
#   make check-debug  the same on the debug kernel (scripts/kconfig/debug.config: lockdep, KASAN,
#                 kmemleak), with a kmemleak scan after every guest run
#   make bench    benchmarks, the Rust driver against upstream (not a test; Documentation/performance.md);
#                 BENCH_ARGS="--reps N --rounds N --out DIR" passes options to scripts/bench

KDIR ?= $(firstword $(wildcard /lib/modules/$(shell uname -r)/build) \
	$(shell scripts/build-kernel --print-if-built x86_64 2>/dev/null))
# The kernel's own LLVM setting (LLVM=-<clang major>), read from its configuration, unless given.
LLVM ?= $(shell sed -n 's/^CONFIG_CLANG_VERSION=\([0-9]*\)[0-9][0-9][0-9][0-9]$$/-\1/p' \
	$(KDIR)/.config 2>/dev/null)

KMAKE = $(MAKE) -C $(KDIR) M=$(CURDIR) $(if $(LLVM),LLVM=$(LLVM))

.PHONY: all modules clean demo check check-debug bench kdir
all modules: kdir
	$(KMAKE) modules

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
