/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C API the driver uses that the kernel's `bindings` crate does not cover: vfio-pci-core,
 * the PFN address space registration of memory-failure, and p2pdma providers. Fed to bindgen by
 * Kbuild; the allowlist is in src/vfio/bindgen_parameters.
 */
#include <linux/memory-failure.h>
#include <linux/pci-p2pdma.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>

#include "nvgrace_gpu_helpers.h"
