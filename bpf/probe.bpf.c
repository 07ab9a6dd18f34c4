// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * probe.bpf.c - feature probes, never used for events. One tiny program per feature;
 * vigil.bpf.features loads (and where it matters attaches) one at a time, with every
 * other program's autoload off, and reads the kernel's answer. Programs whose attach
 * target depends on the architecture (syscall wrappers) leave it empty here: the
 * loader sets it with bpf_program__set_attach_target() / attach_kprobe(func).
 *
 * Deny-capable programs refuse only under a condition that never holds (no task has
 * tgid 0xffffffff), so a probe attached for a moment changes nothing.
 *
 * common.bpf.h is not included: the probes need none of its maps.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define VG_EPERM   1
#define VG_SIGKILL 9

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16); /* a power of two, a multiple of 4K and 64K pages */
} vg_probe_rb SEC(".maps");

static __always_inline bool vg_never(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == 0xffffffffULL;
}

/* --- program types and attach points ----------------------------------------- */

SEC("tp_btf/sched_process_exec")
int BPF_PROG(vg_p_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int vg_p_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int vg_p_tracepoint(void *ctx)
{
	return 0;
}

SEC("kprobe")
int BPF_KPROBE(vg_p_kprobe)
{
	return 0;
}

SEC("kretprobe")
int BPF_KRETPROBE(vg_p_kretprobe, long ret)
{
	return 0;
}

SEC("kprobe.multi")
int BPF_KPROBE(vg_p_kp_multi)
{
	return 0;
}

SEC("fentry")
int BPF_PROG(vg_p_fentry)
{
	return 0;
}

SEC("fexit")
int BPF_PROG(vg_p_fexit)
{
	return 0;
}

SEC("fentry/security_task_prctl")
int BPF_PROG(vg_p_fentry_sec)
{
	return 0;
}

SEC("fmod_ret/security_task_prctl")
int BPF_PROG(vg_p_fmodret_sec)
{
	return vg_never() ? -VG_EPERM : 0;
}

SEC("fmod_ret")
int BPF_PROG(vg_p_fmodret_sys)
{
	return vg_never() ? -VG_EPERM : 0;
}

SEC("lsm/file_open")
int BPF_PROG(vg_p_lsm_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	return vg_never() ? -VG_EPERM : 0;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(vg_p_lsm_bprm, struct linux_binprm *bprm, int ret)
{
	if (ret)
		return ret;
	return vg_never() ? -VG_EPERM : 0;
}

SEC("uprobe")
int BPF_KPROBE(vg_p_uprobe)
{
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(vg_p_uretprobe, long ret)
{
	return 0;
}

SEC("cgroup/connect4")
int vg_p_connect4(struct bpf_sock_addr *ctx)
{
	/* 0 = refuse (EPERM); attached only to an empty cgroup, so it never runs */
	return ctx->user_ip4 == 0xffffffff ? 0 : 1;
}

SEC("iter/task")
int vg_p_iter_task(struct bpf_iter__task *ctx)
{
	return 0;
}

/* --- helpers (load only; the verifier decides) --------------------------------- */

SEC("raw_tp/sys_enter")
int vg_p_signal(struct bpf_raw_tracepoint_args *ctx)
{
	if (vg_never())
		bpf_send_signal(VG_SIGKILL);
	return 0;
}

SEC("kprobe")
int BPF_KPROBE(vg_p_override)
{
	if (vg_never())
		bpf_override_return(ctx, -VG_EPERM);
	return 0;
}

SEC("fentry/security_file_open")
int BPF_PROG(vg_p_d_path, struct file *file)
{
	char buf[64];

	if (vg_never())
		bpf_d_path((struct path *)&file->f_path, buf, sizeof(buf));
	return 0;
}

SEC("raw_tp/sys_enter")
int vg_p_ringbuf(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 v = 0;

	if (vg_never())
		bpf_ringbuf_output(&vg_probe_rb, &v, sizeof(v), 0);
	return 0;
}

static long vg_p_loop_cb(__u32 i, void *data)
{
	return 1;
}

SEC("raw_tp/sys_enter")
int vg_p_bpf_loop(struct bpf_raw_tracepoint_args *ctx)
{
	bpf_loop(1, vg_p_loop_cb, NULL, 0);
	return 0;
}

SEC("raw_tp/sys_enter")
int vg_p_ktime_boot(struct bpf_raw_tracepoint_args *ctx)
{
	return bpf_ktime_get_boot_ns() == 0;
}

/* bpf_probe_write_user (the Set action on USDT arguments): refused under lockdown. */
SEC("raw_tp/sys_enter")
int vg_p_write_user(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 v = 0;

	if (vg_never())
		bpf_probe_write_user((void *)ctx->args[1], &v, sizeof(v));
	return 0;
}

/* A uprobe that rewrites the registers, as Override on a uprobe would (set the return
 * value, return to the caller): kernels whose uprobe programs cannot write their
 * context refuse the store at load. */
SEC("uprobe")
int vg_p_uprobe_regs(struct pt_regs *ctx)
{
	if (vg_never())
		ctx->ax = 0;
	return 0;
}
