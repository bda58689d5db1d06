// SPDX-License-Identifier: GPL-2.0
/*
 * nvgrace_pgattr: a test-only module that reports the stage-1 page-table leaf entries mapping an
 * address, with the memory type they select, so that the test rig can check the cache
 * attributes nvgrace-gpu-vfio-pci gives its user and kernel mappings of the GPU memory. It reads
 * page tables and two registers (MAIR_EL1 on arm64, the PAT MSR on x86); it never writes a page
 * table, maps nothing and changes nothing, except through the second file below.
 *
 * Interface: /sys/kernel/debug/nvgrace_pgattr/lookup (mode 0600, CAP_SYS_ADMIN to open).
 * Write one request, then read the answer from offset 0 of the same open file: pread() at 0,
 * or read(), as a write() sets the file position back to 0 (each open file keeps its own last
 * answer; a new request replaces it, a failed one clears it):
 *
 *   user <va>     the leaf entry that maps user address <va> in the calling process. Only
 *                 VM_IO/VM_PFNMAP mappings (device memory) can be looked up.
 *   kernel <va>   the leaf entry that maps kernel address <va>, which must lie in vmalloc space
 *                 (ioremap(), memremap() of memory outside the linear map), in init_mm.
 *   kmap <pa>     every leaf entry of vmalloc space that maps physical address <pa>: the kernel
 *                 mappings of <pa> (one answer line each, at most PGATTR_MAX_HITS).
 *
 * Numbers are parsed by kstrtoull() with base 0 (0x... hex, else decimal). A request fails with
 * EINVAL (malformed, or a kernel address outside vmalloc space), EFAULT (no VMA at a user
 * address), EOPNOTSUPP (a VMA that is not VM_IO/VM_PFNMAP), ENOENT (nothing mapped there: not
 * faulted in, or no kernel mapping of <pa>), EFAULT for kernel lookups that found nothing
 * and met a table they could not read, or E2BIG (more than PGATTR_MAX_HITS mappings).
 *
 * Each answer line is space-separated key=value fields:
 *
 *   va=0x...      the address looked up (for kmap: the address that maps <pa>)
 *   level=        pte, pmd or pud: the level of the leaf entry
 *   size=0x...    bytes mapped by the leaf entry
 *   entry=0x...   the raw leaf entry
 *   phys=0x...    the physical address that va translates to
 *   type=         the memory type the entry selects. arm64: the MAIR_EL1 attribute its AttrIndx
 *                 selects, as normal-wb, normal-nc, normal-wt, normal-wb-tagged (MTE),
 *                 normal-o<outer>-i<inner> (other normal memory), device-nGnRnE, device-nGnRE,
 *                 device-nGRE, device-GRE or mair-0x<attr>; x86: wb, wc, wt, wp, uc or uc- from
 *                 PAT/PCD/PWT through the PAT MSR when the CPU has PAT (the kernel's use of it
 *                 aside: without it the MSR keeps its reset value), else their legacy meaning
 *                 (MTRRs, which x86 combines with it, are not considered)
 *   arm64 only:   attrindx=<n> mair=0x<attr>
 *   x86 only:     pat-index=<n> kernel-pat=on|off (whether the kernel manages the PAT, so
 *                 whether write-combining is WC or falls back to UC-)
 *
 * The one thing it changes: /sys/kernel/debug/nvgrace_pgattr/claim (mode 0600, CAP_SYS_ADMIN)
 * claims a PFN range in memory-failure's registry (register_pfn_address_space()), so that a
 * driver's registration of an overlapping range fails with EBUSY: the rig's way to make the
 * drivers' open_device fail after vfio_pci_core_enable() and see it unwound. Write
 * "<first pfn> <pages>" to claim, "release" to give it back; closing the file that claimed also
 * gives it back. One claim at a time (EBUSY for a second one); EOPNOTSUPP without
 * CONFIG_MEMORY_FAILURE; EINVAL for a malformed request or 0 pages. "mem <start> <bytes>"
 * requests that physical address range (request_mem_region()), so that vfio-pci-core cannot
 * request a BAR inside it when it enables the device (vfio_pci_core_map_bars() leaves the BAR
 * unmapped, an IOMEM_ERR_PTR(-EBUSY)); "release" and the close give it back too, EBUSY when it
 * is taken already.
 */

#include <linux/capability.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/ioport.h>
#include <linux/kernel.h>
#include <linux/memory-failure.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pgtable.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#ifdef CONFIG_X86
#include <asm/cpufeature.h>
#include <asm/memtype.h>
#include <asm/msr.h>
#include <asm/processor.h>
#endif
#ifdef CONFIG_ARM64
#include <asm/sysreg.h>
#endif

#define PGATTR_REQ_MAX	64
#define PGATTR_BUF_SIZE	4096
#define PGATTR_MAX_HITS	16

struct pgattr_leaf {
	const char *level;
	unsigned long va;
	u64 size;
	u64 entry;
	u64 phys;
	bool large;
};

struct pgattr_file {
	struct mutex lock;	/* protects len and buf */
	size_t len;
	char buf[PGATTR_BUF_SIZE];
};

static struct dentry *pgattr_dir;

#ifdef CONFIG_ARM64
static void pgattr_mair_nibble(char *out, size_t n, u8 nib)
{
	/* 0b0100 Non-cacheable, 0bx1RW Write-Back, 0bx0RW Write-Through (RW != 00). */
	if (nib == 0x4)
		strscpy(out, "nc", n);
	else if (nib & 0x4)
		strscpy(out, "wb", n);
	else
		strscpy(out, "wt", n);
}

/* The name of a MAIR_ELx attribute (Arm ARM, MAIR_EL1.Attr<n>). */
static void pgattr_mair_name(char *out, size_t n, u8 attr)
{
	static const char * const device[] = { "nGnRnE", "nGnRE", "nGRE", "GRE" };
	u8 outer = attr >> 4, inner = attr & 0xf;
	char o[4], i[4];

	if (attr == 0xf0) {
		/* FEAT_MTE2: Tagged Normal, Inner and Outer Write-Back. */
		snprintf(out, n, "normal-wb-tagged");
	} else if (!outer) {
		if (inner & 0x3)
			snprintf(out, n, "mair-0x%02x", attr);
		else
			snprintf(out, n, "device-%s", device[inner >> 2]);
	} else if (!inner) {
		snprintf(out, n, "mair-0x%02x", attr);
	} else {
		pgattr_mair_nibble(o, sizeof(o), outer);
		pgattr_mair_nibble(i, sizeof(i), inner);
		if (!strcmp(o, i))
			snprintf(out, n, "normal-%s", o);
		else
			snprintf(out, n, "normal-o%s-i%s", o, i);
	}
}

static int pgattr_type(char *out, size_t n, const struct pgattr_leaf *leaf)
{
	unsigned int idx = (leaf->entry & PTE_ATTRINDX_MASK) >> 2;
	u8 attr = (read_sysreg(mair_el1) >> (8 * idx)) & 0xff;
	char name[24];

	pgattr_mair_name(name, sizeof(name), attr);
	return scnprintf(out, n, "type=%s attrindx=%u mair=0x%02x", name, idx, attr);
}
#elif defined(CONFIG_X86)
static int pgattr_type(char *out, size_t n, const struct pgattr_leaf *leaf)
{
	/* PAT memory types (Intel SDM Vol. 3A, 13.12.3 "Selecting a Memory Type from the PAT"). */
	static const char * const pat_types[8] = {
		"uc", "wc", "pat-reserved-2", "pat-reserved-3", "wt", "wp", "wb", "uc-"
	};
	static const char * const legacy[4] = { "wb", "wt", "uc-", "uc" };
	u64 pat_bit = leaf->large ? _PAGE_PAT_LARGE : _PAGE_PAT;
	unsigned int idx = (leaf->entry & _PAGE_PWT ? 1 : 0) |
			   (leaf->entry & _PAGE_PCD ? 2 : 0) |
			   (leaf->entry & pat_bit ? 4 : 0);
	const char *name;
	u64 pat;

	if (boot_cpu_has(X86_FEATURE_PAT) && !rdmsrq_safe(MSR_IA32_CR_PAT, &pat))
		name = pat_types[(pat >> (8 * idx)) & 7];
	else
		name = legacy[idx & 3];
	return scnprintf(out, n, "type=%s pat-index=%u kernel-pat=%s", name, idx,
			pat_enabled() ? "on" : "off");
}
#else
#error "nvgrace_pgattr decodes arm64 and x86 page tables only"
#endif

/* Appends one answer line for @leaf to @f->buf. */
static void pgattr_emit(struct pgattr_file *f, const struct pgattr_leaf *leaf)
{
	size_t room = sizeof(f->buf) - f->len;
	char *p = f->buf + f->len;
	int n;

	n = scnprintf(p, room, "va=0x%lx level=%s size=0x%llx entry=0x%llx phys=0x%llx ",
		      leaf->va, leaf->level, leaf->size, leaf->entry, leaf->phys);
	n += pgattr_type(p + n, room - n, leaf);
	n += scnprintf(p + n, room - n, "\n");
	f->len += min_t(size_t, n, room - 1);
}

/*
 * A user address: follow_pfnmap_start() returns the pfn and pgprot of the entry under the
 * page-table lock, with mmap_lock held for reading as it requires.
 */
static int pgattr_user(struct pgattr_file *f, unsigned long va)
{
	struct follow_pfnmap_args args = { .address = va };
	struct mm_struct *mm = current->mm;
	struct pgattr_leaf leaf = { .va = va };
	unsigned long base_pfn;
	int ret = 0;

	if (!mm)
		return -EINVAL;
	if (mmap_read_lock_killable(mm))
		return -EINTR;
	args.vma = vma_lookup(mm, va);
	if (!args.vma) {
		ret = -EFAULT;
		goto out;
	}
	if (!(args.vma->vm_flags & (VM_IO | VM_PFNMAP))) {
		ret = -EOPNOTSUPP;
		goto out;
	}
	if (follow_pfnmap_start(&args)) {
		ret = -ENOENT;
		goto out;
	}
	/*
	 * args.pfn is the pfn of va's page; the entry holds the leaf's first pfn. The pfn and the
	 * pgprot (pte_pgprot() and its pmd/pud variants: every bit but the address) together are
	 * the raw entry, rebuilt here with pfn_pte()/pfn_pmd()/pfn_pud().
	 */
	leaf.size = ~args.addr_mask + 1;
	base_pfn = args.pfn - ((va & ~args.addr_mask) >> PAGE_SHIFT);
	if (args.addr_mask == PAGE_MASK) {
		leaf.level = "pte";
		leaf.entry = pte_val(pfn_pte(base_pfn, args.pgprot));
	} else if (args.addr_mask == PMD_MASK) {
		leaf.level = "pmd";
		leaf.entry = pmd_val(pfn_pmd(base_pfn, args.pgprot));
		leaf.large = true;
	} else {
		leaf.level = "pud";
		leaf.entry = pud_val(pfn_pud(base_pfn, args.pgprot));
		leaf.large = true;
	}
	leaf.phys = PFN_PHYS(args.pfn) | (va & ~PAGE_MASK);
	follow_pfnmap_end(&args);
	pgattr_emit(f, &leaf);
out:
	mmap_read_unlock(mm);
	return ret;
}

/*
 * Kernel addresses: the module walks the kernel's tables itself. No exported interface gives
 * the entry of a kernel address on every architecture: lookup_address() is x86-only,
 * vmalloc_to_page() returns the page alone, and apply_to_existing_page_range() warns on, and
 * refuses, the PMD and PUD leaves that huge ioremap() makes.
 *
 * Nor is init_mm exported to modules (or swapper_pg_dir, init_top_pgt), so the walk starts where
 * the CPU starts: at TTBR1_EL1 on arm64, the base of the kernel half's tables, which is
 * swapper_pg_dir (init_mm.pgd) within the page, possibly offset into it when a 52-bit VA kernel
 * runs with 48 bits (offset_ttbr1 in arch/arm64/include/asm/assembler.h); at CR3 on x86, the
 * current process's top-level table, whose kernel half holds init_mm's entries (those of vmalloc
 * space are allocated at boot and shared by every PGD: preallocate_vmalloc_pages()). From there
 * the walk indexes as pgd_offset_k() does. pgattr_selftest() checks it on every load.
 *
 * The walk is the one vmalloc_to_page() makes, with no lock, as there is none to take: kernel
 * page tables of vmalloc space are not freed while a mapping in them lives (only a new huge
 * mapping frees the table it replaces, pmd_free_pte_page()/pud_free_pmd_page(), and the range
 * it takes over has no mapping left). The caller keeps the mappings it asks about alive (the
 * test holds the device open). For a range being remapped meanwhile, the answer may be stale;
 * every table read is a get_kernel_nofault(), so a freed table cannot crash the walk, and
 * nothing but a value read is ever followed.
 */
struct pgattr_walk {
	struct pgattr_file *f;
	/* kernel <va>: report the leaf that maps va. kmap <pa>: every leaf that maps pa. */
	bool by_pfn;
	unsigned long va;
	u64 pa;
	unsigned int hits;
	struct pgattr_leaf first;
	bool faulted;
};

static void pgattr_leaf_found(struct pgattr_walk *w, const char *level, unsigned long va,
			      u64 size, u64 entry, unsigned long pfn, bool large)
{
	struct pgattr_leaf leaf = {
		.level = level, .size = size, .entry = entry, .large = large,
	};
	u64 base = PFN_PHYS(pfn);

	if (w->by_pfn) {
		if (w->pa < base || w->pa - base >= size)
			return;
		leaf.va = (va & ~(unsigned long)(size - 1)) + (w->pa - base);
	} else {
		leaf.va = w->va;
	}
	leaf.phys = base + (leaf.va & (size - 1));
	if (!w->hits)
		w->first = leaf;
	if (++w->hits <= PGATTR_MAX_HITS)
		pgattr_emit(w->f, &leaf);
}

static void pgattr_walk_pte(struct pgattr_walk *w, pmd_t pmd, unsigned long addr,
			    unsigned long end)
{
	pte_t *ptep = pte_offset_kernel(&pmd, addr);
	pte_t pte;

	for (; addr < end; addr += PAGE_SIZE, ptep++) {
		if (get_kernel_nofault(pte, ptep)) {
			w->faulted = true;
			return;
		}
		if (pte_present(pte))
			pgattr_leaf_found(w, "pte", addr, PAGE_SIZE, pte_val(pte), pte_pfn(pte),
					  false);
	}
}

static void pgattr_walk_pmd(struct pgattr_walk *w, pud_t *pudp, pud_t pud, unsigned long addr,
			    unsigned long end)
{
	pmd_t *pmdp = pmd_offset_lockless(pudp, pud, addr);
	unsigned long next;
	pmd_t pmd;

	do {
		next = pmd_addr_end(addr, end);
		if (get_kernel_nofault(pmd, pmdp)) {
			w->faulted = true;
			return;
		}
		if (!pmd_present(pmd))
			continue;
		if (pmd_leaf(pmd))
			pgattr_leaf_found(w, "pmd", addr, PMD_SIZE, pmd_val(pmd), pmd_pfn(pmd),
					  true);
		else if (!pmd_bad(pmd))
			pgattr_walk_pte(w, pmd, addr, next);
	} while (pmdp++, addr = next, addr != end);
}

static void pgattr_walk_pud(struct pgattr_walk *w, p4d_t *p4dp, p4d_t p4d, unsigned long addr,
			    unsigned long end)
{
	pud_t *pudp = pud_offset_lockless(p4dp, p4d, addr);
	unsigned long next;
	pud_t pud;

	do {
		next = pud_addr_end(addr, end);
		if (get_kernel_nofault(pud, pudp)) {
			w->faulted = true;
			return;
		}
		if (!pud_present(pud))
			continue;
		if (pud_leaf(pud))
			pgattr_leaf_found(w, "pud", addr, PUD_SIZE, pud_val(pud), pud_pfn(pud),
					  true);
		else if (!pud_bad(pud))
			pgattr_walk_pmd(w, pudp, pud, addr, next);
		cond_resched();
	} while (pudp++, addr = next, addr != end);
}

static void pgattr_walk_p4d(struct pgattr_walk *w, pgd_t *pgdp, pgd_t pgd, unsigned long addr,
			    unsigned long end)
{
	p4d_t *p4dp = p4d_offset_lockless(pgdp, pgd, addr);
	unsigned long next;
	p4d_t p4d;

	do {
		next = p4d_addr_end(addr, end);
		if (get_kernel_nofault(p4d, p4dp)) {
			w->faulted = true;
			return;
		}
		/* vmalloc space has no P4D leaves (no huge vmap at that level). */
		if (p4d_none(p4d) || p4d_leaf(p4d) || p4d_bad(p4d))
			continue;
		pgattr_walk_pud(w, p4dp, p4d, addr, next);
	} while (p4dp++, addr = next, addr != end);
}

/* The kernel's top-level table: init_mm.pgd (see above). */
static pgd_t *pgattr_kernel_pgd(void)
{
#ifdef CONFIG_ARM64
	u64 ttbr = read_sysreg(ttbr1_el1);
	phys_addr_t pa = ttbr & GENMASK_ULL(47, PAGE_SHIFT);

	/* PA[51:48] of a table base sit in TTBR[5:2] (phys_to_ttbr()). */
	if (IS_ENABLED(CONFIG_ARM64_PA_BITS_52))
		pa |= (ttbr & GENMASK_ULL(5, 2)) << 46;
	return phys_to_virt(pa);
#else
	return __va(read_cr3_pa());
#endif
}

/* Walks the kernel's tables over [addr, end), which lies in vmalloc space. */
static void pgattr_walk_kernel(struct pgattr_walk *w, unsigned long addr, unsigned long end)
{
	pgd_t *pgdp = pgd_offset_pgd(pgattr_kernel_pgd(), addr);
	unsigned long next;
	pgd_t pgd;

	do {
		next = pgd_addr_end(addr, end);
		if (get_kernel_nofault(pgd, pgdp)) {
			w->faulted = true;
			return;
		}
		if (pgd_none(pgd) || pgd_leaf(pgd) || pgd_bad(pgd))
			continue;
		pgattr_walk_p4d(w, pgdp, pgd, addr, next);
	} while (pgdp++, addr = next, addr != end);
}

static int pgattr_walk_result(struct pgattr_walk *w)
{
	if (w->hits > PGATTR_MAX_HITS)
		return -E2BIG;
	if (!w->hits)
		return w->faulted ? -EFAULT : -ENOENT;
	return 0;
}

static int pgattr_kernel(struct pgattr_file *f, unsigned long va)
{
	struct pgattr_walk w = { .f = f, .va = va };

	if (!is_vmalloc_addr((void *)va))
		return -EINVAL;
	pgattr_walk_kernel(&w, va & PAGE_MASK, (va & PAGE_MASK) + PAGE_SIZE);
	return pgattr_walk_result(&w);
}

static int pgattr_kmap(struct pgattr_file *f, u64 pa)
{
	struct pgattr_walk w = { .f = f, .by_pfn = true, .pa = pa };

	/* VMALLOC_END is inclusive on x86, exclusive on arm64: its last page is never mapped. */
	pgattr_walk_kernel(&w, VMALLOC_START, VMALLOC_END & PAGE_MASK);
	return pgattr_walk_result(&w);
}

static int pgattr_open(struct inode *inode, struct file *file)
{
	struct pgattr_file *f;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	f = kzalloc_obj(*f);
	if (!f)
		return -ENOMEM;
	mutex_init(&f->lock);
	file->private_data = f;
	return 0;
}

static int pgattr_release(struct inode *inode, struct file *file)
{
	struct pgattr_file *f = file->private_data;

	mutex_destroy(&f->lock);
	kfree(f);
	return 0;
}

static ssize_t pgattr_write(struct file *file, const char __user *ubuf, size_t count,
			    loff_t *ppos)
{
	struct pgattr_file *f = file->private_data;
	char req[PGATTR_REQ_MAX], *cmd, *arg;
	unsigned long long val;
	int ret;

	if (!count || count >= sizeof(req))
		return -EINVAL;
	if (copy_from_user(req, ubuf, count))
		return -EFAULT;
	req[count] = '\0';
	cmd = strim(req);
	arg = strchr(cmd, ' ');
	if (!arg)
		return -EINVAL;
	*arg++ = '\0';
	ret = kstrtoull(strim(arg), 0, &val);
	if (ret)
		return ret;

	mutex_lock(&f->lock);
	f->len = 0;
	if (!strcmp(cmd, "user"))
		ret = val <= ULONG_MAX ? pgattr_user(f, val) : -EINVAL;
	else if (!strcmp(cmd, "kernel"))
		ret = val <= ULONG_MAX ? pgattr_kernel(f, val) : -EINVAL;
	else if (!strcmp(cmd, "kmap"))
		ret = pgattr_kmap(f, val);
	else
		ret = -EINVAL;
	if (ret)
		f->len = 0;
	mutex_unlock(&f->lock);
	*ppos = 0;
	return ret ?: count;
}

static ssize_t pgattr_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct pgattr_file *f = file->private_data;
	ssize_t ret;

	mutex_lock(&f->lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, f->buf, f->len);
	mutex_unlock(&f->lock);
	return ret;
}

static const struct file_operations pgattr_fops = {
	.owner = THIS_MODULE,
	.open = pgattr_open,
	.release = pgattr_release,
	.read = pgattr_read,
	.write = pgattr_write,
	.llseek = default_llseek,
};

/* The claim of the "claim" file: a registered pfn_address_space and the open file owning it. */
static DEFINE_MUTEX(claim_lock);
static struct pfn_address_space claim_space;
static struct file *claim_owner;	/* protected by claim_lock; NULL: nothing claimed */
/* The "mem" claim: a requested physical range and its owner, also under claim_lock. */
static resource_size_t mem_start, mem_len;
static struct file *mem_owner;

/* Never called while the claim holds: the tests inject no memory failure into a claimed range. */
static int claim_pfn_to_vma_pgoff(struct vm_area_struct *vma, unsigned long pfn, pgoff_t *pgoff)
{
	return -EINVAL;
}

static void claim_release_locked(struct file *file)
{
	lockdep_assert_held(&claim_lock);
	if (claim_owner == file) {
		unregister_pfn_address_space(&claim_space);
		claim_owner = NULL;
	}
	if (mem_owner == file) {
		release_mem_region(mem_start, mem_len);
		mem_owner = NULL;
	}
}

/* "mem <start> <bytes>": request that physical range, under claim_lock. */
static int claim_mem_locked(struct file *file, char *args)
{
	char *len = strchr(args, ' ');
	unsigned long long start, n;

	if (!len)
		return -EINVAL;
	*len++ = 0;
	if (kstrtoull(args, 0, &start) || kstrtoull(skip_spaces(len), 0, &n) || !n ||
	    start + n - 1 < start)
		return -EINVAL;
	if (mem_owner)
		return -EBUSY;
	if (!request_mem_region(start, n, "nvgrace_pgattr claim"))
		return -EBUSY;
	mem_start = start;
	mem_len = n;
	mem_owner = file;
	return 0;
}

static ssize_t claim_write(struct file *file, const char __user *ubuf, size_t count,
			   loff_t *ppos)
{
	char req[PGATTR_REQ_MAX], *pages;
	unsigned long long first, nr;
	int ret;

	if (count >= sizeof(req))
		return -EINVAL;
	if (copy_from_user(req, ubuf, count))
		return -EFAULT;
	req[count] = 0;
	strim(req);
	guard(mutex)(&claim_lock);
	if (!strcmp(req, "release")) {
		claim_release_locked(file);
		return count;
	}
	if (!strncmp(req, "mem ", 4)) {
		ret = claim_mem_locked(file, req + 4);
		return ret ? ret : count;
	}
	pages = strchr(req, ' ');
	if (!pages)
		return -EINVAL;
	*pages++ = 0;
	if (kstrtoull(req, 0, &first) || kstrtoull(skip_spaces(pages), 0, &nr) || !nr ||
	    first + nr - 1 < first || first + nr - 1 > ULONG_MAX)
		return -EINVAL;
	if (claim_owner)
		return -EBUSY;
	claim_space.node.start = first;
	claim_space.node.last = first + nr - 1;
	/* memory-failure walks this mapping's VMAs for a failure in the range: the file's, empty. */
	claim_space.mapping = file->f_mapping;
	claim_space.pfn_to_vma_pgoff = claim_pfn_to_vma_pgoff;
	ret = register_pfn_address_space(&claim_space);
	if (ret)
		return ret;
	claim_owner = file;
	return count;
}

static int claim_open(struct inode *inode, struct file *file)
{
	return capable(CAP_SYS_ADMIN) ? 0 : -EPERM;
}

static int claim_file_release(struct inode *inode, struct file *file)
{
	guard(mutex)(&claim_lock);
	claim_release_locked(file);
	return 0;
}

static const struct file_operations claim_fops = {
	.owner = THIS_MODULE,
	.open = claim_open,
	.release = claim_file_release,
	.write = claim_write,
};

/*
 * The walk of the kernel's tables must find what the kernel's own walk finds: a vmalloc()ed page
 * mapped once in vmalloc space, by a PTE, at the pfn vmalloc_to_pfn() gives, write-back
 * (PAGE_KERNEL).
 */
static int __init pgattr_selftest(void)
{
	struct pgattr_walk w = { .by_pfn = true };
	unsigned long va;
	void *p;
	int ret = -ENODEV;

	w.f = kzalloc_obj(*w.f);
	p = vmalloc(PAGE_SIZE);
	if (!w.f || !p) {
		ret = -ENOMEM;
		goto out;
	}
	va = (unsigned long)p;
	w.pa = PFN_PHYS(vmalloc_to_pfn(p));
	pgattr_walk_kernel(&w, VMALLOC_START, VMALLOC_END & PAGE_MASK);
	if (w.hits != 1 || w.first.va != va || strcmp(w.first.level, "pte") ||
	    (!strstr(w.f->buf, " type=normal-wb ") && !strstr(w.f->buf, " type=wb "))) {
		pr_err("self-test: vmalloc() page at %#lx, pa %#llx: %u mappings found: %s\n", va,
		       w.pa, w.hits, w.f->buf);
		goto out;
	}
	ret = 0;
out:
	vfree(p);
	kfree(w.f);
	return ret;
}

static int __init pgattr_init(void)
{
	struct dentry *file;
	int ret;

	ret = pgattr_selftest();
	if (ret)
		return ret;

	pgattr_dir = debugfs_create_dir("nvgrace_pgattr", NULL);
	if (IS_ERR(pgattr_dir))
		return PTR_ERR(pgattr_dir);
	file = debugfs_create_file("lookup", 0600, pgattr_dir, NULL, &pgattr_fops);
	if (!IS_ERR(file))
		file = debugfs_create_file("claim", 0600, pgattr_dir, NULL, &claim_fops);
	if (IS_ERR(file)) {
		debugfs_remove(pgattr_dir);
		return PTR_ERR(file);
	}
	return 0;
}

static void __exit pgattr_exit(void)
{
	debugfs_remove(pgattr_dir);
}

module_init(pgattr_init);
module_exit(pgattr_exit);

MODULE_DESCRIPTION("Test-only report of the page-table entries and memory types of addresses");
MODULE_LICENSE("GPL");
