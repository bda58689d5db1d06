/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of the C helpers in src/vfio/helpers.c: static inline functions and macros of the
 * VFIO headers that Rust cannot call directly.
 */
#ifndef NVGRACE_GPU_HELPERS_H
#define NVGRACE_GPU_HELPERS_H

#include <linux/vfio_pci_core.h>

bool nvgrace_helper_vfio_pci_memory_enabled(struct vfio_pci_core_device *vdev);
void nvgrace_helper_vfio_put_device(struct vfio_device *device);

#endif
