// SPDX-License-Identifier: GPL-2.0
/*
 * nvgrace_s2attr: a test-only arm64 module that prints the leaf entries of a KVM guest's stage-2
 * page tables with the memory attributes they hold, for the passthrough test's stage-2 check.
 *
 * KVM's own dump (CONFIG_PTDUMP_STAGE2_DEBUGFS, /sys/kernel/debug/kvm/<pid>-<fd>/
 * stage2_page_tables, arch/arm64/kvm/ptdump.c) shows each range's IPA, size, level,
 * permissions, AF and whether it is a block, but neither the output address nor MemAttr: its
 * attribute mask leaves MemAttr out, so ranges that differ only in memory type are even merged.
 * This module reads the same tables (the kvm_s2_mmu that KVM's debugfs file carries) and prints
 * what that dump leaves out. It reads page tables only; it never writes one.
 *
 * Interface: /sys/kernel/debug/nvgrace_s2attr/walk (mode 0600, CAP_SYS_ADMIN to open). Write the
 * path of a VM's stage2_page_tables file, then read the answer from offset 0 of the same open
 * file. Opening KVM's file (as this module does, for the walk) holds a reference on the VM, so
 * the VM cannot go away meanwhile. The walk holds kvm->mmu_lock for reading, as KVM's own
 * shared walkers do, and the RCU read lock (stage-2 tables are freed after a grace period).
 *
 * The answer's first line: "vm ia_bits=<n> start_level=<n> fwb=<0|1> flags=0x<pgt flags>"
 * (fwb: whether the stage-2 encodings are FEAT_S2FWB's, ARM64_HAS_STAGE2_FWB; KVM sets
 * HCR_EL2.FWB for its guests then). Then one line per valid leaf entry:
 *
 *   ipa=0x... level=<n> size=0x... desc=0x... pa=0x... memattr=0x<MemAttr[3:0]>
 *   type=<normal-wb|normal-nc|normal-as-s1|device-nGnRnE|device-nGnRE|device-nGRE|device-GRE|
 *         normal-o<outer>-i<inner>|reserved> s2ap=<r|w|rw|-> af=<0|1>
 *
 * type decodes MemAttr with the FWB table when fwb=1 (Arm ARM D8.6.6: MemAttr[2] clear is Device
 * of the type MemAttr[1:0]; set: 0b01 Normal Non-cacheable, 0b10 Normal Write-Back, 0b11 the
 * stage-1 attributes), with the combining table otherwise (MemAttr[3:2] 0b00 is Device, else
 * MemAttr[3:2] the outer and MemAttr[1:0] the inner cacheability: 1 NC, 2 WT, 3 WB).
 * More than S2ATTR_MAX bytes of answer fail the request with E2BIG.
 */

#include <linux/capability.h>
#include <linux/debugfs.h>
#include <linux/fs.h>
#include <linux/kvm_host.h>
#include <linux/magic.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>

#include <asm/cpufeature.h>
#include <asm/kvm_pgtable.h>

#define S2ATTR_MAX	(512 * 1024)
#define S2ATTR_PATH_MAX	256

struct s2attr_file {
	struct mutex lock;
	char *buf;
	size_t len;
};

struct s2attr_walk {
	struct s2attr_file *f;
	struct kvm_pgtable_mm_ops *mm_ops;
	bool fwb;
	int err;
};

static struct dentry *s2attr_dir;

static __printf(2, 3) void s2attr_printf(struct s2attr_walk *w, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (w->err)
		return;
	va_start(ap, fmt);
	n = vsnprintf(w->f->buf + w->f->len, S2ATTR_MAX - w->f->len, fmt, ap);
	va_end(ap);
	if (n >= S2ATTR_MAX - w->f->len)
		w->err = -E2BIG;
	else
		w->f->len += n;
}

static const char *s2attr_type(u32 memattr, bool fwb, char *scratch, size_t len)
{
	static const char *const device[] = {
		"device-nGnRnE", "device-nGnRE", "device-nGRE", "device-GRE"
	};

	if (fwb) {
		if (!(memattr & 0x4))
			return device[memattr & 0x3];
		switch (memattr & 0x3) {
		case 1:
			return "normal-nc";
		case 2:
			return "normal-wb";
		case 3:
			return "normal-as-s1";
		default:
			return "reserved";
		}
	}
	if (!(memattr & 0xc))
		return device[memattr & 0x3];
	if (memattr == 0xf)
		return "normal-wb";
	if (memattr == 0x5)
		return "normal-nc";
	snprintf(scratch, len, "normal-o%u-i%u", (memattr >> 2) & 0x3, memattr & 0x3);
	return scratch;
}

static void s2attr_leaf(struct s2attr_walk *w, u64 ipa, s8 level, kvm_pte_t pte)
{
	u32 memattr = FIELD_GET(KVM_PTE_LEAF_ATTR_LO_S2_MEMATTR, pte);
	bool r = pte & KVM_PTE_LEAF_ATTR_LO_S2_S2AP_R, wr = pte & KVM_PTE_LEAF_ATTR_LO_S2_S2AP_W;
	char scratch[24];

	s2attr_printf(w, "ipa=0x%llx level=%d size=0x%llx desc=0x%llx pa=0x%llx memattr=0x%x type=%s s2ap=%s af=%d\n",
		      ipa, level, kvm_granule_size(level), (u64)pte, kvm_pte_to_phys(pte),
		      memattr, s2attr_type(memattr, w->fwb, scratch, sizeof(scratch)),
		      r && wr ? "rw" : r ? "r" : wr ? "w" : "-",
		      !!(pte & KVM_PTE_LEAF_ATTR_LO_S2_AF));
}

/* The entries of one table (n of them: more than one page's worth at a concatenated start level). */
static void s2attr_table(struct s2attr_walk *w, kvm_pte_t *table, u64 n, u64 base, s8 level)
{
	u64 i, size = kvm_granule_size(level);

	for (i = 0; i < n && !w->err; i++) {
		kvm_pte_t pte = READ_ONCE(table[i]);
		u64 ipa = base + i * size;

		if (!kvm_pte_valid(pte))
			continue;
		if (level < KVM_PGTABLE_LAST_LEVEL &&
		    FIELD_GET(KVM_PTE_TYPE, pte) == KVM_PTE_TYPE_TABLE)
			s2attr_table(w, w->mm_ops->phys_to_virt(kvm_pte_to_phys(pte)),
				     PTRS_PER_PTE, ipa, level + 1);
		else
			s2attr_leaf(w, ipa, level, pte);
	}
}

static int s2attr_walk_vm(struct s2attr_file *f, const char *path)
{
	struct s2attr_walk w = { .f = f, .fwb = cpus_have_final_cap(ARM64_HAS_STAGE2_FWB) };
	struct kvm_s2_mmu *mmu;
	struct kvm_pgtable *pgt;
	struct file *kf;
	struct kvm *kvm;
	const char *base = strrchr(path, '/');

	/* Only KVM's stage2_page_tables files: their inode's private data is the kvm_s2_mmu. */
	if (!base || strcmp(base, "/stage2_page_tables"))
		return -EINVAL;
	kf = filp_open(path, O_RDONLY, 0);
	if (IS_ERR(kf))
		return PTR_ERR(kf);
	if (file_inode(kf)->i_sb->s_magic != DEBUGFS_MAGIC) {
		w.err = -EINVAL;
		goto out;
	}
	mmu = file_inode(kf)->i_private;
	kvm = container_of(mmu, struct kvm, arch.mmu);
	if (!mmu || mmu->arch != &kvm->arch) {
		w.err = -EINVAL;
		goto out;
	}
	rcu_read_lock();
	read_lock(&kvm->mmu_lock);
	pgt = mmu->pgt;
	if (!pgt) {
		w.err = -ENOENT;
	} else {
		kvm_pte_t *pgd = rcu_dereference_raw(pgt->pgd);
		u64 n = 1ull << (pgt->ia_bits - kvm_granule_shift(pgt->start_level));

		w.mm_ops = pgt->mm_ops;
		s2attr_printf(&w, "vm ia_bits=%u start_level=%d fwb=%d flags=0x%x\n",
			      pgt->ia_bits, pgt->start_level, w.fwb, (u32)pgt->flags);
		s2attr_table(&w, pgd, n, 0, pgt->start_level);
	}
	read_unlock(&kvm->mmu_lock);
	rcu_read_unlock();
out:
	filp_close(kf, NULL);
	return w.err;
}

static int s2attr_open(struct inode *inode, struct file *file)
{
	struct s2attr_file *f;

	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	f->buf = vmalloc(S2ATTR_MAX);
	if (!f->buf) {
		kfree(f);
		return -ENOMEM;
	}
	mutex_init(&f->lock);
	file->private_data = f;
	return 0;
}

static int s2attr_release(struct inode *inode, struct file *file)
{
	struct s2attr_file *f = file->private_data;

	mutex_destroy(&f->lock);
	vfree(f->buf);
	kfree(f);
	return 0;
}

static ssize_t s2attr_write(struct file *file, const char __user *ubuf, size_t count,
			    loff_t *ppos)
{
	struct s2attr_file *f = file->private_data;
	char req[S2ATTR_PATH_MAX];
	int ret;

	if (!count || count >= sizeof(req))
		return -EINVAL;
	if (copy_from_user(req, ubuf, count))
		return -EFAULT;
	req[count] = '\0';

	mutex_lock(&f->lock);
	f->len = 0;
	ret = s2attr_walk_vm(f, strim(req));
	if (ret)
		f->len = 0;
	mutex_unlock(&f->lock);
	*ppos = 0;
	return ret ?: count;
}

static ssize_t s2attr_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct s2attr_file *f = file->private_data;
	ssize_t ret;

	mutex_lock(&f->lock);
	ret = simple_read_from_buffer(ubuf, count, ppos, f->buf, f->len);
	mutex_unlock(&f->lock);
	return ret;
}

static const struct file_operations s2attr_fops = {
	.owner = THIS_MODULE,
	.open = s2attr_open,
	.release = s2attr_release,
	.read = s2attr_read,
	.write = s2attr_write,
	.llseek = default_llseek,
};

static int __init s2attr_init(void)
{
	struct dentry *file;

	s2attr_dir = debugfs_create_dir("nvgrace_s2attr", NULL);
	if (IS_ERR(s2attr_dir))
		return PTR_ERR(s2attr_dir);
	file = debugfs_create_file("walk", 0600, s2attr_dir, NULL, &s2attr_fops);
	if (IS_ERR(file)) {
		debugfs_remove(s2attr_dir);
		return PTR_ERR(file);
	}
	return 0;
}

static void __exit s2attr_exit(void)
{
	debugfs_remove(s2attr_dir);
}

module_init(s2attr_init);
module_exit(s2attr_exit);
MODULE_DESCRIPTION("Test-only report of KVM stage-2 leaf entries and their memory attributes");
MODULE_LICENSE("GPL");
