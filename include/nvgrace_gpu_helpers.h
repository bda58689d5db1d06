/* SPDX-License-Identifier: GPL-2.0 */
/*
 * C helpers for src/vfio/: the static inline functions and macros of the headers the driver uses,
 * which Rust cannot call directly, and the values of function-like macros as constants bindgen
 * can read. Each helper forwards to one kernel function or macro; the logic stays in Rust.
 */
#ifndef NVGRACE_GPU_HELPERS_H
#define NVGRACE_GPU_HELPERS_H

#include <linux/io.h>
#include <linux/mm.h>
#include <linux/pm_runtime.h>
#include <linux/sched/signal.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/vfio_pci_core.h>

bool nvgrace_helper_vfio_pci_memory_enabled(struct vfio_pci_core_device *vdev);
void nvgrace_helper_vfio_put_device(struct vfio_device *device);
void __iomem *nvgrace_helper_vfio_pci_core_get_iomap(struct vfio_pci_core_device *vdev,
						     unsigned int bar);
u32 nvgrace_helper_ioread32(const void __iomem *addr);
void __iomem *nvgrace_helper_ioremap_wc(phys_addr_t offset, size_t size);
int nvgrace_helper_pm_runtime_resume_and_get(struct device *dev);
void nvgrace_helper_pm_runtime_put(struct device *dev);
void nvgrace_helper_vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags);
void nvgrace_helper_vma_set_writecombine(struct vm_area_struct *vma);
bool nvgrace_helper_vma_is_cow_mapping(struct vm_area_struct *vma);
void nvgrace_helper_pagefault_disable(void);
void nvgrace_helper_pagefault_enable(void);
unsigned long nvgrace_helper_copy_to_user_nofault(void __user *to, const void *from,
						  unsigned long n);
unsigned long nvgrace_helper_copy_from_user_nofault(void *to, const void __user *from,
						    unsigned long n);
void nvgrace_helper_set_current_state_killable(void);
bool nvgrace_helper_fatal_signal_pending(void);
void nvgrace_helper_fault_dbg(struct device *dev, unsigned int order, unsigned long pfn,
			      unsigned int ret);

#endif
