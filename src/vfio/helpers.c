// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the static inline functions and macros the driver needs (see
 * include/nvgrace_gpu_helpers.h). Each is a one-line forwarder; the logic stays in Rust.
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

void __iomem *nvgrace_helper_vfio_pci_core_get_iomap(struct vfio_pci_core_device *vdev,
						     unsigned int bar)
{
	return vfio_pci_core_get_iomap(vdev, bar);
}

u32 nvgrace_helper_ioread32(const void __iomem *addr)
{
	return ioread32(addr);
}

void __iomem *nvgrace_helper_ioremap_wc(phys_addr_t offset, size_t size)
{
	return ioremap_wc(offset, size);
}

int nvgrace_helper_pm_runtime_resume_and_get(struct device *dev)
{
	return pm_runtime_resume_and_get(dev);
}

void nvgrace_helper_pm_runtime_put(struct device *dev)
{
	pm_runtime_put(dev);
}

void nvgrace_helper_vm_flags_set(struct vm_area_struct *vma, vm_flags_t flags)
{
	vm_flags_set(vma, flags);
}

void nvgrace_helper_vma_set_writecombine(struct vm_area_struct *vma)
{
	vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
}

bool nvgrace_helper_vma_is_cow_mapping(struct vm_area_struct *vma)
{
	return vma_is_cow_mapping(vma);
}

void nvgrace_helper_pagefault_disable(void)
{
	pagefault_disable();
}

void nvgrace_helper_pagefault_enable(void)
{
	pagefault_enable();
}

/*
 * The write-back copies of read/write, with page faults disabled around them (one call per
 * copy instead of three): they return the bytes not copied, stopping at the first user page
 * that would fault, which the caller faults in without memory_lock. To user memory through
 * copy_to_user() (fault injection and instrumentation as any copy); from user memory with
 * __copy_from_user_inatomic(), which does not zero what it could not copy (copy_from_user()
 * would, and guests may be reading that memory).
 */
unsigned long nvgrace_helper_copy_to_user_nofault(void __user *to, const void *from,
						  unsigned long n)
{
	unsigned long left;

	pagefault_disable();
	left = copy_to_user(to, from, n);
	pagefault_enable();
	return left;
}

unsigned long nvgrace_helper_copy_from_user_nofault(void *to, const void __user *from,
						    unsigned long n)
{
	unsigned long left;

	if (!access_ok(from, n))
		return n;
	pagefault_disable();
	left = __copy_from_user_inatomic(to, from, n);
	pagefault_enable();
	return left;
}

void nvgrace_helper_set_current_state_killable(void)
{
	set_current_state(TASK_KILLABLE);
}

bool nvgrace_helper_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

/* Upstream's message, word for word, with its function's name. */
void nvgrace_helper_fault_dbg(struct device *dev, unsigned int order, unsigned long pfn,
			      unsigned int ret)
{
	dev_dbg_ratelimited(dev, "%s order = %d pfn 0x%lx: 0x%x\n",
			    "nvgrace_gpu_vfio_pci_huge_fault", order, pfn, ret);
}
