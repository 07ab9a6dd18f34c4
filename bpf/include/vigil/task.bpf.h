/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * task.bpf.h - small readers of a task's identity shared by the sensors.
 */
#ifndef VIGIL_TASK_BPF_H
#define VIGIL_TASK_BPF_H

/* The task's entry in its own (active) pid namespace: .nr is its pid there, .ns the ns. */
static __always_inline struct upid vg_task_upid(struct task_struct *task)
{
	struct pid *tpid = BPF_CORE_READ(task, thread_pid);
	unsigned int level = BPF_CORE_READ(tpid, level);
	struct upid upid = {};

	bpf_probe_read_kernel(&upid, sizeof(upid), &tpid->numbers[level & 31]);
	return upid;
}

/*
 * The task's namespace inums, as /proc/PID/ns shows them: nsproxy's, the user namespace
 * of its credentials and the pid namespace it is a member of (not pid_for_children).
 * Left zero when the task has no nsproxy (it is exiting).
 */
static __always_inline void vg_read_namespaces(struct task_struct *task, struct vg_namespaces *out)
{
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);
	struct upid upid;

	if (!nsp)
		return;
	out->uts = BPF_CORE_READ(nsp, uts_ns, ns.inum);
	out->ipc = BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	out->mnt = BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	out->pid_for_children = BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
	out->net = BPF_CORE_READ(nsp, net_ns, ns.inum);
	if (bpf_core_field_exists(nsp->time_ns)) {
		out->time = BPF_CORE_READ(nsp, time_ns, ns.inum);
		out->time_for_children = BPF_CORE_READ(nsp, time_ns_for_children, ns.inum);
	}
	out->cgroup = BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	out->user = BPF_CORE_READ(task, real_cred, user_ns, ns.inum);
	upid = vg_task_upid(task);
	out->pid = BPF_CORE_READ(upid.ns, ns.inum);
}

/* All of a cred's ids, capability sets and securebits, and its user namespace. */
static __always_inline void vg_cred_fill(const struct cred *cred, struct vg_creds *c)
{
	c->uid = BPF_CORE_READ(cred, uid.val);
	c->gid = BPF_CORE_READ(cred, gid.val);
	c->euid = BPF_CORE_READ(cred, euid.val);
	c->egid = BPF_CORE_READ(cred, egid.val);
	c->suid = BPF_CORE_READ(cred, suid.val);
	c->sgid = BPF_CORE_READ(cred, sgid.val);
	c->fsuid = BPF_CORE_READ(cred, fsuid.val);
	c->fsgid = BPF_CORE_READ(cred, fsgid.val);
	c->securebits = BPF_CORE_READ(cred, securebits);
	/* kernel_cap_t is a u64 since 6.3 and u32[2] before: 8 bytes either way */
	bpf_probe_read_kernel(&c->cap_permitted, 8, &cred->cap_permitted);
	bpf_probe_read_kernel(&c->cap_effective, 8, &cred->cap_effective);
	bpf_probe_read_kernel(&c->cap_inheritable, 8, &cred->cap_inheritable);
	c->user_ns_level = BPF_CORE_READ(cred, user_ns, level);
	c->user_ns_uid = BPF_CORE_READ(cred, user_ns, owner.val);
	c->user_ns_gid = BPF_CORE_READ(cred, user_ns, group.val);
	c->user_ns_inum = BPF_CORE_READ(cred, user_ns, ns.inum);
}

/* The task's (objective) credentials. */
static __always_inline void vg_read_creds(struct task_struct *task, struct vg_creds *c)
{
	vg_cred_fill(BPF_CORE_READ(task, real_cred), c);
}

#endif /* VIGIL_TASK_BPF_H */
