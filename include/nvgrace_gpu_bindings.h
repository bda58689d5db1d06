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

/*
 * Values of function-like and per-architecture macros, as constants bindgen evaluates (the
 * kernel's own bindings use the same device, RUST_CONST_HELPER_*).
 */
/* ioctl numbers (_IO() macros of include/uapi/linux/vfio.h). */
const unsigned int NVGRACE_CONST_VFIO_DEVICE_RESET = VFIO_DEVICE_RESET;
const unsigned int NVGRACE_CONST_VFIO_DEVICE_IOEVENTFD = VFIO_DEVICE_IOEVENTFD;
/* VMA flags whose definitions are per architecture or macros over bit numbers. */
const vm_flags_t NVGRACE_CONST_VM_ALLOW_ANY_UNCACHED = VM_ALLOW_ANY_UNCACHED;
const vm_flags_t NVGRACE_CONST_VM_IO = VM_IO;
const vm_flags_t NVGRACE_CONST_VM_PFNMAP = VM_PFNMAP;
const vm_flags_t NVGRACE_CONST_VM_DONTEXPAND = VM_DONTEXPAND;
const vm_flags_t NVGRACE_CONST_VM_DONTDUMP = VM_DONTDUMP;

