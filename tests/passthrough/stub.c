// SPDX-License-Identifier: GPL-2.0
/*
 * The inner machine's kernel for the QEMU passthrough test: a Multiboot (v1) image that QEMU's
 * -kernel loads after the firmware (SeaBIOS) has assigned the PCI BARs.
 *
 * It finds the GPU (vendor 0x10de) on bus 0 through configuration mechanism #1 (ports 0xCF8/0xCFC,
 * PCI Local Bus Specification 3.0, section 3.2.2.3.2), prints its BAR registers, reads the first
 * 64-bit word of BAR2 and BAR4 at the addresses the firmware gave them, writes the complement of
 * each at offset 8, reads the probe words the outer side listed (probe_bar(): offsets into the
 * memory and past its end), and halts. Everything goes to COM1 (port 0x3F8) as lines
 * "stub: key=value" that tests/guest/src/bin/passthrough_test/main.rs parses.
 *
 * The BARs are 64-bit and the firmware may place them above 4 GiB, so accesses go through a 2 MiB
 * PAE window (Intel SDM Vol. 3A, 4.4 "PAE paging"): linear [0, 3 GiB) is identity-mapped and the
 * last GiB of the linear space maps whatever physical 2 MiB page is being accessed.
 */
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define MB_MAGIC 0x1BADB002u	/* Multiboot Specification 0.6.96, 3.1.1 */
#define MB_FLAGS 0x0u

__attribute__((section(".multiboot"), used, aligned(4)))
static const u32 multiboot_header[3] = { MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS) };

u8 stub_stack[16384] __attribute__((aligned(16)));

void stub_main(void);

__asm__(".text\n"
	".globl _start\n"
	"_start:\n"
	"	cli\n"
	"	lea stub_stack+16384, %esp\n"
	"	call stub_main\n"
	"1:	hlt\n"
	"	jmp 1b\n");

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }

#define COM1 0x3F8

static void serial_putc(char c)
{
	/* Line Status Register bit 5: transmitter holding register empty (16550 data sheet). */
	while (!(inb(COM1 + 5) & 0x20))
		;
	outb(COM1, c);
}

static void serial_puts(const char *s)
{
	while (*s)
		serial_putc(*s++);
}

static void puthex(u64 v)
{
	int i;

	serial_puts("0x");
	for (i = 60; i >= 0; i -= 4)
		serial_putc("0123456789abcdef"[(v >> i) & 0xf]);
}

static void kv(const char *key, u64 v)
{
	serial_puts("stub: ");
	serial_puts(key);
	serial_putc('=');
	puthex(v);
	serial_putc('\n');
}

static u32 cfg_read32(u32 dev, u32 off)
{
	outl(0xCF8, 0x80000000u | (dev << 11) | (off & 0xFC));
	return inl(0xCFC);
}

static void cfg_write16(u32 dev, u32 off, u16 v)
{
	outl(0xCF8, 0x80000000u | (dev << 11) | (off & 0xFC));
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"((u16)(0xCFC + (off & 2))));
}

/* PAE structures: a page-directory-pointer table and four page directories of 2 MiB pages. */
static u64 pdpt[4] __attribute__((aligned(32)));
static u64 pd[4][512] __attribute__((aligned(4096)));

#define PG_P	(1ull << 0)
#define PG_RW	(1ull << 1)
#define PG_PCD	(1ull << 4)
#define PG_PS	(1ull << 7)
#define WINDOW	0xC0000000u	/* linear base of the window: the first entry of the last PD */

static void paging_on(void)
{
	u32 i, j;

	for (i = 0; i < 4; i++) {
		pdpt[i] = (u32)pd[i] | PG_P;
		for (j = 0; j < 512; j++)
			pd[i][j] = ((u64)i << 30 | (u64)j << 21) | PG_P | PG_RW | PG_PS;
	}
	__asm__ volatile(
		"mov %%cr4, %%eax\n orl $0x20, %%eax\n mov %%eax, %%cr4\n"	/* CR4.PAE */
		"mov %0, %%cr3\n"
		"mov %%cr0, %%eax\n orl $0x80000000, %%eax\n mov %%eax, %%cr0\n"	/* CR0.PG */
		: : "r"(pdpt) : "eax", "memory");
}

/* Maps the 2 MiB page holding physical address pa (uncached) and returns its linear address. */
static volatile u32 *window(u64 pa)
{
	pd[3][0] = (pa & ~0x1FFFFFull) | PG_P | PG_RW | PG_PS | PG_PCD;
	__asm__ volatile("invlpg (%0)" : : "r"(WINDOW) : "memory");
	return (volatile u32 *)(WINDOW + (u32)(pa & 0x1FFFFF));
}

static u64 read64(u64 pa)
{
	volatile u32 *p = window(pa);

	return p[0] | (u64)p[1] << 32;
}

static void write64(u64 pa, u64 v)
{
	volatile u32 *p = window(pa);

	p[0] = (u32)v;
	p[1] = (u32)(v >> 32);
}

/* probe_bar(): reads the words the outer side listed, with read64(). */
#define PROBE_READ64 read64
#include "probe.h"

void stub_main(void)
{
	static const u32 bars[] = { 2, 4 };
	u32 dev, i;

	paging_on();
	serial_puts("stub: start\n");
	for (dev = 0; dev < 32; dev++) {
		u32 id = cfg_read32(dev, 0);

		if ((id & 0xFFFF) == 0x10DE)
			break;
	}
	if (dev == 32) {
		serial_puts("stub: error=no device with vendor 0x10de on bus 0\n");
		return;
	}
	kv("slot", dev);
	kv("id", cfg_read32(dev, 0));
	/* Memory Space Enable (PCI 3.0, 6.2.2), in case the firmware left it off. */
	cfg_write16(dev, 0x04, (u16)cfg_read32(dev, 0x04) | 0x2);
	kv("command", cfg_read32(dev, 0x04) & 0xFFFF);
	for (i = 0; i < 2; i++) {
		u32 bar = bars[i], lo = cfg_read32(dev, 0x10 + 4 * bar);
		u32 hi = cfg_read32(dev, 0x14 + 4 * bar);
		u64 base = ((u64)hi << 32) | (lo & ~0xFull);
		char key[] = "barN";
		char rkey[] = "barN_read";
		char wkey[] = "barN_wrote";
		u64 v;

		key[3] = rkey[3] = wkey[3] = (char)('0' + bar);
		kv(key, ((u64)hi << 32) | lo);
		if (!base)
			continue;
		v = read64(base);
		kv(rkey, v);
		write64(base + 8, ~v);
		kv(wkey, ~v);
		probe_bar(bar, base);
	}
	serial_puts("stub: done\n");
}
