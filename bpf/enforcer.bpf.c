// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * enforcer.bpf.c - the enforcer of one policy (spec.enforcers): acts on the syscalls it
 * lists for a thread a hook notified (action NotifyEnforcer writes vg_enforcer, keyed
 * by the thread's pid_tgid; the policy's hooks share this object's map by fd).
 *
 * Two programs; the loader autoloads one:
 * - vg_enf_fmodret: fmod_ret on each listed syscall function (kernels that allow fmod_ret
 *   on syscalls): the syscall does not run, it returns argError; argSig is sent.
 * - vg_enf_sys_exit: raw tracepoint sys_exit, filtered to the listed syscall numbers
 *   (kernels without fmod_ret on syscalls): argSig is sent at the syscall's exit, so the
 *   process dies before it returns to user space, but the syscall has run; argError
 *   cannot be applied (the compiler refuses a notification without a signal there).
 * The notification is consumed by the first listed syscall the thread makes.
 */
#define VG_NO_TASK_HELPERS
#include "vigil/common.bpf.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VG_ENFORCER_ENTRIES);
	__type(key, __u64);
	__type(value, struct vg_enforcer_note);
} vg_enforcer SEC(".maps");

/* syscall number -> 1 for the listed syscalls (raw tracepoint variant) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, VG_ENFORCER_CALLS);
	__type(key, __u32);
	__type(value, __u8);
} vg_enf_calls SEC(".maps");

/* per-policy counters: enforcement actions taken, indexed by enum vg_enf_count */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VG_ENF_MAX);
	__type(key, __u32);
	__type(value, __u64);
} vg_enf_counts SEC(".maps");

static __always_inline void vg_enf_count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&vg_enf_counts, &what);

	if (c)
		(*c)++;
}

/* Consume this thread's notification; returns it in *out (0: there was one). */
static __always_inline int vg_enf_take(struct vg_enforcer_note *out)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vg_enforcer_note *n = bpf_map_lookup_elem(&vg_enforcer, &id);

	if (!n)
		return -1;
	*out = *n;
	bpf_map_delete_elem(&vg_enforcer, &id);
	if (out->sig) {
		bpf_send_signal(out->sig);
		vg_enf_count(VG_ENF_SIGNAL);
	}
	return 0;
}

/* 64 bits, sign-extended: the syscall function returns a long (see vg_gen_fmodret) */
SEC("fmod_ret")
long vg_enf_fmodret(void *ctx)
{
	struct vg_enforcer_note n;

	if (vg_enf_take(&n))
		return 0;
	if (n.error)
		vg_enf_count(VG_ENF_OVERRIDE);
	return (long)(__s32)n.error;
}

/* raw_syscalls/sys_exit: args[0] = struct pt_regs *, args[1] = the return value */
SEC("raw_tp/sys_exit")
int vg_enf_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	struct vg_enforcer_note n;
	__u32 nr;

	nr = (__u32)BPF_CORE_READ(regs, orig_ax);
	if (!bpf_map_lookup_elem(&vg_enf_calls, &nr))
		return 0;
	vg_enf_take(&n);
	return 0;
}
