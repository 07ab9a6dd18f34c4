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

#endif /* VIGIL_TASK_BPF_H */
