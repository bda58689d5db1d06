// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the static inline functions and macros of the VFIO headers, which Rust cannot call
 * directly. Each is a one-line forwarder; the logic stays in Rust.
 */
#include "nvgrace_gpu_helpers.h"

bool nvgrace_helper_vfio_pci_memory_enabled(struct vfio_pci_core_device *vdev)
{
	return __vfio_pci_memory_enabled(vdev);
}

void nvgrace_helper_vfio_put_device(struct vfio_device *device)
{
	vfio_put_device(device);
}
