// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * creds.bpf.c - credential changes after exec, loaded by the base sensor next to
 * process.bpf.c and sharing its ring buffer, counters and rate map by fd. A separate
 * object so that a kernel refusing these programs (or without syscall tracepoints)
 * loses credential tracking only, never the base sensor.
 */
#include "vigil/common.bpf.h"
#include "vigil/task.bpf.h"

/*
 * Credential changes after exec. The exec record has the credentials the process
 * started with; these programs report each successful change, so user space follows
 * the process's current credentials. One classic tracepoint per rare syscall's exit
 * (not raw_syscalls/sys_exit, which would run for every syscall of the host).
 */
static __always_inline int vg_cred_send(__u32 call)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	const struct cred *cred = BPF_CORE_READ(task, real_cred);
	struct group_info *gi = BPF_CORE_READ(cred, group_info);
	struct vg_creds_msg msg = {};
	__u32 n = 0;

	msg.hdr.op = VG_MSG_CREDS;
	msg.hdr.size = sizeof(msg);
	msg.hdr.ktime = bpf_ktime_get_boot_ns();
	msg.pid = BPF_CORE_READ(task, tgid);
	msg.tid = BPF_CORE_READ(task, pid);
	msg.call = call;
	vg_read_creds(task, &msg.creds);
	if (gi) {
		n = BPF_CORE_READ(gi, ngroups);
		msg.ngroups = n;
		if (n > VG_CRED_GROUPS)
			n = VG_CRED_GROUPS;
		if (n)
			bpf_probe_read_kernel(msg.groups, n * sizeof(__u32),
					      &gi->gid);
	}
	return vg_send(&msg, sizeof(msg));
}

/* Calls that return 0 on success. */
#define VG_CRED_EXIT(name, call)						\
SEC("tracepoint/syscalls/sys_exit_" #name)					\
int vg_cred_##name(struct trace_event_raw_sys_exit *ctx)			\
{										\
	if (ctx->ret != 0)							\
		return 0;							\
	return vg_cred_send(call);						\
}

VG_CRED_EXIT(setuid, VG_CRED_SETUID)
VG_CRED_EXIT(setgid, VG_CRED_SETGID)
VG_CRED_EXIT(setreuid, VG_CRED_SETREUID)
VG_CRED_EXIT(setregid, VG_CRED_SETREGID)
VG_CRED_EXIT(setresuid, VG_CRED_SETRESUID)
VG_CRED_EXIT(setresgid, VG_CRED_SETRESGID)
VG_CRED_EXIT(setgroups, VG_CRED_SETGROUPS)
VG_CRED_EXIT(capset, VG_CRED_CAPSET)

/* setfsuid/setfsgid return the previous id whether or not they changed it: report only
 * when the id the task has now is another one. */
SEC("tracepoint/syscalls/sys_exit_setfsuid")
int vg_cred_setfsuid(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if ((__u32)ctx->ret == BPF_CORE_READ(task, real_cred, fsuid.val))
		return 0;
	return vg_cred_send(VG_CRED_SETFSUID);
}

SEC("tracepoint/syscalls/sys_exit_setfsgid")
int vg_cred_setfsgid(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if ((__u32)ctx->ret == BPF_CORE_READ(task, real_cred, fsgid.val))
		return 0;
	return vg_cred_send(VG_CRED_SETFSGID);
}

#define VG_PR_SET_KEEPCAPS 8
#define VG_PR_SET_SECUREBITS 28

/* prctl: only the options that change the credentials' securebits; the option is the
 * first argument, still in the task's saved user registers at syscall exit. */
SEC("tracepoint/syscalls/sys_exit_prctl")
int vg_cred_prctl(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs;
	long option;

	if (ctx->ret != 0)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	option = PT_REGS_PARM1_CORE_SYSCALL(regs);
	if (option != VG_PR_SET_SECUREBITS && option != VG_PR_SET_KEEPCAPS)
		return 0;
	return vg_cred_send(VG_CRED_PRCTL);
}
