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

#endif /* VIGIL_TASK_BPF_H */
