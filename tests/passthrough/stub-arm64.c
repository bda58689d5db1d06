// SPDX-License-Identifier: GPL-2.0
/*
 * The arm64 inner machine's kernel for the QEMU passthrough test: a bare-metal ELF that QEMU's
 * -kernel loads into `-M virt` (docs/system/arm/virt.rst: a guest that is not a Linux kernel
 * starts at the ELF entry at EL1 with the MMU off; the device tree sits at the start of RAM,
 * 0x40000000, so this image is linked 1 MiB above it). There is no firmware in the inner machine,
 * so nothing has assigned the PCI BARs: this kernel does what firmware would.
 *
 * It finds the GPU (vendor 0x10de) on bus 0 of virt's PCIe host through its ECAM (the high ECAM
 * at 0x4010000000, where virt puts it when the IPA space allows, else the low one at 0x3f000000;
 * hw/arm/virt.c, base_memmap and extended_memmap), sizes every memory BAR (PCI Local Bus
 * Specification 3.0, 6.2.5.1), places the 64-bit ones in virt's high PCIe MMIO window (from
 * 0x8000000000) and the 32-bit ones in the low window (from 0x10000000), each aligned to its
 * size, and sets Memory Space Enable. It then reads the first 64-bit word of BAR2 and BAR4,
 * writes the complement of each at offset 8, reads the probe words the outer side listed
 * (probe_bar(), as in stub.c), and prints everything on the PL011 UART (0x09000000) as lines
 * "stub: key=value" that tests/guest/src/bin/passthrough_test/main.rs parses, the same keys as
 * the x86 stub (stub.c).
 *
 * After "stub: done" it keeps running (the test reads KVM's stage-2 tables of this VM meanwhile)
 * until the machine's power button is pressed (QMP system_powerdown: without firmware, virt wires
 * it to pin 3 of its PL061 GPIO at 0x09030000), then powers off through PSCI SYSTEM_OFF (the
 * conduit is HVC under KVM), and QEMU exits.
 *
 * The MMU stays off: every data access is Device-nGnRnE at stage 1 (Arm ARM D8.2.11, "The
 * effects of disabling an address translation stage"), instruction fetches Normal. That is fine
 * for loads and stores of aligned words (built with -mstrict-align, no exclusives, no DC ZVA);
 * the stage-2 attributes KVM chose are what the test checks, in KVM's own tables, and they
 * combine with stage 1's to the stronger type (with FEAT_S2FWB a stage-2 Write-Back forces
 * Write-Back; the memory type the guest kernel would see is not what this stub is about).
 */
typedef unsigned char u8;
typedef unsigned int u32;
typedef unsigned long long u64;

#define UART		0x09000000ull	/* PL011 */
#define UART_DR		0x000
#define UART_FR		0x018
#define UART_FR_TXFF	(1u << 5)
#define GPIO		0x09030000ull	/* PL061 */
#define GPIO_DATA_ALL	0x3fc		/* GPIODATA with address mask 0xff: every pin */
#define GPIO_IEV	0x40c		/* rising edge (with GPIOIS = 0, GPIOIBE = 0: the reset values) */
#define GPIO_RIS	0x414		/* raw interrupt status: latches the edge */
#define POWER_PIN	(1u << 3)

#define ECAM_HIGH	0x4010000000ull
#define ECAM_LOW	0x3f000000ull
#define MMIO_HIGH	0x8000000000ull
#define MMIO_LOW	0x10000000ull

#define PSCI_SYSTEM_OFF	0x84000008u	/* PSCI 1.1 (DEN0022), 5.1.9 */

u8 stub_stack[16384] __attribute__((aligned(16)));

void stub_main(void);

__asm__(".section .text.start, \"ax\"\n"
	".globl _start\n"
	"_start:\n"
	"	adrp x0, stub_stack + 16384\n"
	"	add x0, x0, :lo12:stub_stack + 16384\n"
	"	mov sp, x0\n"
	"	bl stub_main\n"
	"1:	wfi\n"
	"	b 1b\n"
	".text\n");

static inline u32 rd32(u64 a) { return *(volatile u32 *)a; }
static inline void wr32(u64 a, u32 v) { *(volatile u32 *)a = v; }
static inline u64 rd64(u64 a) { return *(volatile u64 *)a; }
static inline void wr64(u64 a, u64 v) { *(volatile u64 *)a = v; }

static void putc_(char c)
{
	while (rd32(UART + UART_FR) & UART_FR_TXFF)
		;
	wr32(UART + UART_DR, (u8)c);
}

static void puts_(const char *s)
{
	while (*s)
		putc_(*s++);
}

static void kv(const char *key, u64 v)
{
	int i;

	puts_("stub: ");
	puts_(key);
	puts_("=0x");
	for (i = 60; i >= 0; i -= 4)
		putc_("0123456789abcdef"[(v >> i) & 0xf]);
	putc_('\n');
}

static u64 ecam;

static u64 cfg(u32 dev, u32 off) { return ecam + ((u64)dev << 15) + off; }

static void psci_system_off(void)
{
	register u64 x0 __asm__("x0") = PSCI_SYSTEM_OFF;

	__asm__ volatile("hvc #0" : "+r"(x0) : : "x1", "x2", "x3", "memory");
}

/* Finds vendor 0x10de on bus 0 of the ECAM at base; returns the device number or 32. */
static u32 find_gpu(u64 base)
{
	u32 dev;

	ecam = base;
	for (dev = 0; dev < 32; dev++)
		if ((rd32(cfg(dev, 0)) & 0xffff) == 0x10de)
			return dev;
	return 32;
}

/* Sizes and places the memory BARs of dev (decoding is off: the Command register's reset value). */
static void assign_bars(u32 dev)
{
	u64 high = MMIO_HIGH, low = MMIO_LOW;
	u32 bar;

	for (bar = 0; bar < 6; bar++) {
		u64 reg = cfg(dev, 0x10 + 4 * bar), size, mask, *next;
		u32 lo = rd32(reg);
		int is64 = (lo & 0x7) == 0x4;

		if (lo & 0x1)	/* I/O BAR: virt's GPU has none; left alone */
			continue;
		wr32(reg, 0xffffffffu);
		mask = rd32(reg) & ~0xfull;
		if (is64) {
			wr32(reg + 4, 0xffffffffu);
			mask |= (u64)rd32(reg + 4) << 32;
		} else {
			mask |= 0xffffffff00000000ull;
		}
		size = ~mask + 1;
		if (mask == 0xfffffffffffffff0ull || !size) {	/* not implemented */
			wr32(reg, 0);
			if (is64)
				wr32(reg + 4, 0), bar++;
			continue;
		}
		next = is64 ? &high : &low;
		*next = (*next + size - 1) & ~(size - 1);
		wr32(reg, (u32)*next);
		if (is64)
			wr32(reg + 4, (u32)(*next >> 32));
		*next += size;
		if (is64)
			bar++;
	}
	/* Memory Space Enable (PCI 3.0, 6.2.2). */
	wr32(cfg(dev, 0x04), (rd32(cfg(dev, 0x04)) & 0xffff) | 0x2);
}

/* probe_bar(): reads the words the outer side listed, with rd64(). */
#define PROBE_READ64 rd64
#include "probe.h"

void stub_main(void)
{
	static const u32 bars[] = { 2, 4 };
	u32 dev, i;

	puts_("stub: start\n");
	dev = find_gpu(ECAM_HIGH);
	if (dev == 32)
		dev = find_gpu(ECAM_LOW);
	if (dev == 32) {
		puts_("stub: error=no device with vendor 0x10de on bus 0 of either ECAM\n");
		psci_system_off();
		return;
	}
	kv("ecam", ecam);
	kv("slot", dev);
	kv("id", rd32(cfg(dev, 0)));
	assign_bars(dev);
	kv("command", rd32(cfg(dev, 0x04)) & 0xffff);
	for (i = 0; i < 2; i++) {
		u32 bar = bars[i], lo = rd32(cfg(dev, 0x10 + 4 * bar));
		u32 hi = rd32(cfg(dev, 0x14 + 4 * bar));
		u64 base = ((u64)hi << 32) | (lo & ~0xfu);
		char key[] = "barN";
		char rkey[] = "barN_read";
		char wkey[] = "barN_wrote";
		u64 v;

		key[3] = rkey[3] = wkey[3] = (char)('0' + bar);
		kv(key, ((u64)hi << 32) | lo);
		if (!base)
			continue;
		v = rd64(base);
		kv(rkey, v);
		wr64(base + 8, ~v);
		kv(wkey, ~v);
		probe_bar(bar, base);
	}
	puts_("stub: done\n");

	wr32(GPIO + GPIO_IEV, POWER_PIN);
	while (!((rd32(GPIO + GPIO_DATA_ALL) | rd32(GPIO + GPIO_RIS)) & POWER_PIN))
		;
	puts_("stub: power-off\n");
	psci_system_off();
	puts_("stub: error=PSCI SYSTEM_OFF returned\n");
}
