// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * hostns.bpf.c - the host's namespaces, for hosts where /proc/1/ns cannot be read
 * (hardened kernels, sandboxes) or where the agent's /proc is not the host's.
 *
 * A task iterator used only as a way to run a program in the reader's context and hand
 * back its output: at the end of the walk (the call without a task) the program walks
 * real_parent up from the reader itself to pid 0. The tasks the iterator shows are not
 * used: a hardened kernel hides some (pid 1 among them) from the iterator as from /proc,
 * and in a container it shows only the container's pid namespace. Every user task
 * descends from pid 1 of the initial pid namespace, and every task from init_task (pid
 * 0, which created pid 1 and kthreadd): so the walk meets both wherever the reader runs.
 * `task->pid` and `tgid` are ids in the initial pid namespace whatever namespace the task
 * is in; pid 1's namespaces are its main thread's, as /proc/1/ns shows them.
 * One struct vg_host_ns is written to the iterator's output.
 *
 * common.bpf.h is not included: this object needs none of its maps.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "vigil/abi.h"
#include "vigil/task.bpf.h"

/* Deeper than any real process tree between the reader and pid 0. */
#define VG_HOST_NS_MAX_HOPS 64

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("iter/task")
int vg_host_ns_iter(struct bpf_iter__task *ctx)
{
	struct task_struct *task, *pid1 = NULL, *parent;
	struct vg_host_ns out = {};
	__u32 hops;

	if (ctx->task)
		return 0; /* the end of the walk only: once per read */
	task = (struct task_struct *)bpf_get_current_task();
	for (hops = 0; hops < VG_HOST_NS_MAX_HOPS; hops++) {
		/* a parent is the thread that forked: pid 1's may be any of its threads */
		if (BPF_CORE_READ(task, tgid) == 1)
			pid1 = BPF_CORE_READ(task, group_leader);
		if (BPF_CORE_READ(task, pid) == 0)
			break;
		parent = BPF_CORE_READ(task, real_parent);
		if (!parent || parent == task)
			break;
		task = parent;
	}
	if (pid1) {
		vg_read_namespaces(pid1, &out.pid1);
		out.flags |= VG_HOST_NS_PID1;
	}
	if (BPF_CORE_READ(task, pid) == 0) {
		vg_read_namespaces(task, &out.init);
		out.flags |= VG_HOST_NS_INIT;
	}
	out.hops = hops;
	bpf_seq_write(ctx->meta->seq, &out, sizeof(out));
	return 0;
}
