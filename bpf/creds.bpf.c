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
 * started with; these programs report each change, so user space follows the process's
 * current credentials. Two ways, chosen by the loader:
 *  - commit_creds (fentry, else kprobe; where the kernel allows them): every change of
 *    the task's credentials, whatever the path (setuid & co., capset, prctl, keyctl,
 *    unshare, ...), with the new credentials, before they apply;
 *  - else one classic tracepoint per credential syscall's exit (not raw_syscalls/
 *    sys_exit, which would run for every syscall of the host), with the task's
 *    credentials after a successful call.
 */
static __always_inline int vg_cred_send(struct task_struct *task, const struct cred *cred,
					__u32 call, __s32 nr)
{
	struct group_info *gi = BPF_CORE_READ(cred, group_info);
	struct vg_creds_msg msg = {};
	__u32 n = 0;

	msg.hdr.op = VG_MSG_CREDS;
	msg.hdr.size = sizeof(msg);
	msg.hdr.ktime = bpf_ktime_get_boot_ns();
	msg.pid = BPF_CORE_READ(task, tgid);
	msg.tid = BPF_CORE_READ(task, pid);
	msg.call = call;
	msg.syscall_nr = nr;
	vg_cred_fill(cred, &msg.creds);
	if (gi) {
		n = BPF_CORE_READ(gi, ngroups);
		msg.ngroups = n;
		if (n > VG_CRED_GROUPS)
			n = VG_CRED_GROUPS;
		if (n)
			bpf_probe_read_kernel(msg.groups, n * sizeof(__u32), &gi->gid);
	}
	return vg_send(&msg, sizeof(msg));
}

/* After a credential syscall: the task's credentials now. */
static __always_inline int vg_cred_now(__u32 call)
{
	struct task_struct *task = bpf_get_current_task_btf();

	return vg_cred_send(task, BPF_CORE_READ(task, real_cred), call, -1);
}

/* The syscall the task is in (its saved user registers), -1 when unknown. */
static __always_inline __s32 vg_syscall_nr(struct task_struct *task)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);

#if defined(__TARGET_ARCH_x86)
	return (__s32)BPF_CORE_READ(regs, orig_ax);
#elif defined(__TARGET_ARCH_arm64)
	return (__s32)BPF_CORE_READ((struct user_pt_regs *)regs, syscallno);
#else
	return -1;
#endif
}

static __always_inline bool vg_cred_same(const struct cred *a, const struct cred *b)
{
	__u64 ca, cb;

	if (BPF_CORE_READ(a, uid.val) != BPF_CORE_READ(b, uid.val) ||
	    BPF_CORE_READ(a, gid.val) != BPF_CORE_READ(b, gid.val) ||
	    BPF_CORE_READ(a, euid.val) != BPF_CORE_READ(b, euid.val) ||
	    BPF_CORE_READ(a, egid.val) != BPF_CORE_READ(b, egid.val) ||
	    BPF_CORE_READ(a, suid.val) != BPF_CORE_READ(b, suid.val) ||
	    BPF_CORE_READ(a, sgid.val) != BPF_CORE_READ(b, sgid.val) ||
	    BPF_CORE_READ(a, fsuid.val) != BPF_CORE_READ(b, fsuid.val) ||
	    BPF_CORE_READ(a, fsgid.val) != BPF_CORE_READ(b, fsgid.val) ||
	    BPF_CORE_READ(a, securebits) != BPF_CORE_READ(b, securebits) ||
	    BPF_CORE_READ(a, group_info) != BPF_CORE_READ(b, group_info) ||
	    BPF_CORE_READ(a, user_ns) != BPF_CORE_READ(b, user_ns))
		return false;
	bpf_probe_read_kernel(&ca, 8, &a->cap_permitted);
	bpf_probe_read_kernel(&cb, 8, &b->cap_permitted);
	if (ca != cb)
		return false;
	bpf_probe_read_kernel(&ca, 8, &a->cap_effective);
	bpf_probe_read_kernel(&cb, 8, &b->cap_effective);
	if (ca != cb)
		return false;
	bpf_probe_read_kernel(&ca, 8, &a->cap_inheritable);
	bpf_probe_read_kernel(&cb, 8, &b->cap_inheritable);
	return ca == cb;
}

/* commit_creds(new): report `new` when it changes anything, except during execve (the
 * exec record carries the credentials the new program runs with). */
static __always_inline int vg_cred_commit(struct cred *new)
{
	struct task_struct *task = bpf_get_current_task_btf();

	if (bpf_core_field_exists(task->in_execve) &&
	    BPF_CORE_READ_BITFIELD_PROBED(task, in_execve))
		return 0;
	if (vg_cred_same(BPF_CORE_READ(task, real_cred), new))
		return 0;
	return vg_cred_send(task, new, VG_CRED_COMMIT, vg_syscall_nr(task));
}

SEC("fentry/commit_creds")
int BPF_PROG(vg_cred_commit_fentry, struct cred *new)
{
	return vg_cred_commit(new);
}

SEC("kprobe/commit_creds")
int BPF_KPROBE(vg_cred_commit_kprobe, struct cred *new)
{
	return vg_cred_commit(new);
}

/* Calls that return 0 on success. */
#define VG_CRED_EXIT(name, call)						\
SEC("tracepoint/syscalls/sys_exit_" #name)					\
int vg_cred_##name(struct trace_event_raw_sys_exit *ctx)			\
{										\
	if (ctx->ret != 0)							\
		return 0;							\
	return vg_cred_now(call);						\
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
	return vg_cred_now(VG_CRED_SETFSUID);
}

SEC("tracepoint/syscalls/sys_exit_setfsgid")
int vg_cred_setfsgid(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if ((__u32)ctx->ret == BPF_CORE_READ(task, real_cred, fsgid.val))
		return 0;
	return vg_cred_now(VG_CRED_SETFSGID);
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
	return vg_cred_now(VG_CRED_PRCTL);
}
