// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * generic_usdt.bpf.c - one USDT hook of one tracing policy: generic.bpf.c's pipeline
 * (configuration, selectors, actions, record) with a USDT entry program.
 *
 * libbpf's USDT support does the binary's side: bpf_program__attach_usdt reads the
 * ELF .note.stapsdt notes, attaches one uprobe per probe site (with the semaphore's
 * reference-counter offset when the probe has one) and stores each site's argument
 * specs (`-4@%edi`, `8@-8(%rbp)`, `$5`) in __bpf_usdt_specs; bpf_usdt_arg() evaluates
 * them here (register, memory at register + offset, constant).
 *
 * The Set action writes an argument that lives in memory (a register + offset spec)
 * with bpf_probe_write_user; the compiler only emits it where the kernel allows that
 * helper (not under lockdown). An argument held in a register cannot be written from
 * a uprobe: Set on it is counted as failed (vg_usdt_set returns an error).
 */
#include "vigil/common.bpf.h"

struct vg_usdt_site {
	__u64 regs;    /* the probe's struct pt_regs (kernel memory) */
	__s64 spec_id; /* libbpf's spec of this site; < 0: unknown */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_usdt_site);
} vg_usdt_site SEC(".maps");

static __always_inline int vg_usdt_set(__u32 index, __u32 value);
#define VG_ACTION_SET(index, value) vg_usdt_set(index, value)

#include "generic.bpf.c"
#include <bpf/usdt.bpf.h>

/* Write `value` into USDT argument `index` of the current probe hit; 0 on success. */

/*
 * One writer per width, each a separate BPF function with a constant size: a single call
 * with a variable size (clang folds a switch of constant-size calls back into one) loses
 * its bounds in older verifiers (6.1: "invalid zero-sized read").
 */
#define VG_USDT_WRITER(n)							\
	static __noinline int vg_usdt_write##n(void *addr, __u64 v)		\
	{									\
		if (!addr)							\
			return -1;						\
		return bpf_probe_write_user(addr, &v, n) ? -1 : 0;		\
	}
VG_USDT_WRITER(1)
VG_USDT_WRITER(2)
VG_USDT_WRITER(4)
VG_USDT_WRITER(8)

static __always_inline int vg_usdt_set(__u32 index, __u32 value)
{
	struct __bpf_usdt_arg_spec *a;
	struct __bpf_usdt_spec *spec;
	struct vg_usdt_site *site;
	__u32 zero = 0;
	int id;
	__u32 size;
	__u64 base = 0, v = value;
	void *addr;

	site = bpf_map_lookup_elem(&vg_usdt_site, &zero);
	if (!site || site->spec_id < 0)
		return -1;
	id = site->spec_id;
	spec = bpf_map_lookup_elem(&__bpf_usdt_specs, &id);
	if (!spec || index >= BPF_USDT_MAX_ARG_CNT || index >= spec->arg_cnt)
		return -1;
	a = &spec->args[index];
	if (a->arg_type != BPF_USDT_ARG_REG_DEREF)
		return -1;
	if (bpf_probe_read_kernel(&base, sizeof(base), (void *)(site->regs + a->reg_off)))
		return -1;
	addr = (void *)(base + a->val_off);
	size = (64 - (__u32)(__u8)a->arg_bitshift) >> 3;
	/* little endian: the low `size` bytes of v are the value at that width */
	switch (size) {
	case 1:
		return vg_usdt_write1(addr, v);
	case 2:
		return vg_usdt_write2(addr, v);
	case 4:
		return vg_usdt_write4(addr, v);
	case 8:
		return vg_usdt_write8(addr, v);
	default:
		return -1;
	}
}

SEC("usdt")
int vg_gen_usdt(struct pt_regs *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};
	struct vg_usdt_site *site;
	__u32 zero = 0;

	for (int i = 0; i < VG_GEN_ARGS; i++) {
		if (i < CFG.nargs) {
			long v = 0;

			bpf_usdt_arg(ctx, CFG.args[i].src, &v);
			raw[i] = v;
		}
	}
	site = bpf_map_lookup_elem(&vg_usdt_site, &zero);
	if (site) {
		site->regs = (__u64)ctx;
		site->spec_id = __bpf_usdt_spec_id(ctx);
	}
	vg_gen_run(ctx, raw, 0, 0);
	return 0;
}
