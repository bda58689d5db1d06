/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The probe list of the passthrough test, shared by both inner kernels (stub.c, stub-arm64.c),
 * which define u32, u64, kv() and PROBE_READ64 (a 64-bit load at a physical address) first.
 *
 * The outer side (tests/guest/src/bin/passthrough_test/main.rs) writes into each BAR the number
 * of probes (at most MAX_PROBES) at offset 16, then their offsets from the BAR's start, one 64-bit
 * word each from offset 24. probe_bar() prints each offset and the word read there as barN_offK
 * and barN_atK, and the number of probes as barN_probes.
 */
#define MAX_PROBES 8

static void probe_bar(u32 bar, u64 base)
{
	char okey[] = "barN_offK", akey[] = "barN_atK", nkey[] = "barN_probes";
	u64 n = PROBE_READ64(base + 16), k;

	okey[3] = akey[3] = nkey[3] = (char)('0' + bar);
	kv(nkey, n);
	if (n > MAX_PROBES)
		n = 0;
	for (k = 0; k < n; k++) {
		u64 off = PROBE_READ64(base + 24 + 8 * k);

		okey[8] = akey[7] = (char)('0' + k);
		kv(okey, off);
		kv(akey, PROBE_READ64(base + off));
	}
}
