// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * process.bpf.c - the base sensor: exec, fork (new thread group) and exit (last
 * thread of a group). Attached with tp_btf on sched_process_{exec,fork,exit}, which
 * every supported kernel allows (no kprobes, no trampolines).
 */
#include "vigil/common.bpf.h"
#include "vigil/path.bpf.h"
#include "vigil/procs.bpf.h"
#include "vigil/task.bpf.h"

struct vg_exec_buf {
	struct vg_exec_msg msg;
	char data[VG_DATA_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_exec_buf);
} vg_exec_heap SEC(".maps");

/* the vg_procs value an exec writes, built here: too large for the program's stack */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_proc);
} vg_proc_heap SEC(".maps");

/* Where paths are resolved before they are copied into the exec record. */
struct vg_path_buf {
	char path[VG_PATH_REGION];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_path_buf);
} vg_path_heap SEC(".maps");

VG_DEFINE_PATH_WALK(vg_proc_path, vg_path_heap, struct vg_path_buf, path)

/*
 * The executed file, resolved (the interpreter for a `#!` script: the file the process
 * now runs), into vg_procs for matchBinaries, as Tetragon compares its binary filters
 * with the exe file's path.
 */
static __always_inline void vg_proc_binary(struct path *p, struct path *root, __u32 *flags,
					   struct vg_proc *proc)
{
	__u32 zero = 0, trunc = 0, pos, len, n;
	struct vg_path_buf *pb;

	pos = vg_proc_path(p, root, &trunc);
	if (trunc)
		*flags |= VG_FLAG_TRUNC_PATH;
	if (pos >= VG_PATH_MAX)
		return;
	pb = bpf_map_lookup_elem(&vg_path_heap, &zero);
	if (!pb)
		return;
	len = (VG_PATH_MAX - pos) & (VG_PATH_MAX - 1);
	n = len < VG_BIN_MAX ? len : VG_BIN_MAX - 1;
	/* keep the mask below: older verifiers (6.1) lose the bound clang relies on */
	barrier_var(n);
	proc->bin_len = n;
	bpf_probe_read_kernel(proc->bin, n & (VG_BIN_MAX - 1), &pb->path[pos & (VG_PATH_MAX - 1)]);
}

/* Resolve `p` and copy it (a forward path, no NUL) to the exec tail at `off`; returns
 * the bytes copied (0: the path is "/"). */
static __always_inline __u32 vg_copy_path(struct vg_exec_buf *buf, __u32 off, struct path *p,
					  struct path *root, __u32 *flags)
{
	__u32 zero = 0, trunc = 0, pos, len;
	struct vg_path_buf *pb;

	pos = vg_proc_path(p, root, &trunc);
	if (trunc)
		*flags |= VG_FLAG_TRUNC_PATH;
	if (pos >= VG_PATH_MAX)
		return 0;
	pb = bpf_map_lookup_elem(&vg_path_heap, &zero);
	if (!pb)
		return 0;
	len = (VG_PATH_MAX - pos) & (VG_PATH_MAX - 1);
	if (bpf_probe_read_kernel(&buf->data[off & VG_OFF_MASK], len, &pb->path[pos & (VG_PATH_MAX - 1)]))
		return 0;
	return len;
}

/*
 * The name the exec was asked for (bprm->filename: the execve path as given, possibly
 * relative to the cwd or through symlinks; the script for a `#!` script), copied to the
 * exec tail at `off` without its NUL. Returns the bytes copied (0: unreadable).
 */
static __always_inline __u32 vg_copy_filename(struct vg_exec_buf *buf, __u32 off,
					      struct linux_binprm *bprm)
{
	const char *name = BPF_CORE_READ(bprm, filename);
	long n;

	if (!name)
		return 0;
	n = bpf_probe_read_kernel_str(&buf->data[off & VG_OFF_MASK], VG_PATH_MAX, name);
	if (n <= 1)
		return 0;
	return n - 1;
}

static __always_inline __u32 vg_read_cgroup_name(struct task_struct *task, struct vg_exec_buf *buf,
						 __u32 *flags)
{
	const char *name;
	long n;

	if (vg_cfg.cgroup_subsys) {
		/* v1 controller hierarchy: css_set->subsys[id]->cgroup->kn->name */
		struct css_set *cset = BPF_CORE_READ(task, cgroups);
		struct cgroup_subsys_state *css = NULL;
		__u32 id = vg_cfg.cgroup_subsys - 1;

		if (!cset || id >= CGROUP_SUBSYS_COUNT)
			goto fail;
		bpf_probe_read_kernel(&css, sizeof(css), &cset->subsys[id]);
		name = css ? BPF_CORE_READ(css, cgroup, kn, name) : NULL;
	} else {
		name = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, name);
	}
	if (!name)
		goto fail;
	n = bpf_probe_read_kernel_str(&buf->data[0], VG_CGROUP_NAME_MAX, name);
	if (n <= 0)
		goto fail;
	return n - 1; /* without the NUL */
fail:
	*flags |= VG_FLAG_ERROR_CGROUP_NAME;
	return 0;
}

static __always_inline __u32 vg_read_args(struct task_struct *task, struct vg_exec_buf *buf,
					  __u32 off, struct vg_exec_msg *msg)
{
	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	__u32 len, max = vg_cfg.max_args;

	if (end <= start)
		return 0;
	len = end - start;
	msg->args_size = len;
	if (max > VG_ARGS_MAX)
		max = VG_ARGS_MAX;
	if (len > max) {
		len = max;
		msg->flags |= VG_FLAG_TRUNC_ARGS;
	}
	if (len > VG_ARGS_MAX)
		len = VG_ARGS_MAX;
	if (bpf_probe_read_user(&buf->data[off & VG_OFF_MASK], len, (void *)start)) {
		msg->flags |= VG_FLAG_ERROR_ARGS;
		vg_count_drop(VG_MSG_EXEC, VG_DROP_READ_ERROR);
		return 0;
	}
	return len;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(vg_proc_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0, off, size;
	struct vg_exec_buf *buf = bpf_map_lookup_elem(&vg_exec_heap, &zero);
	struct vg_exec_msg *msg;
	struct fs_struct *fs;
	struct path exe, pwd, root;
	struct vg_proc *proc = bpf_map_lookup_elem(&vg_proc_heap, &zero);
	__u32 tgid;

	if (!buf || !proc)
		return 0;
	__builtin_memset(proc, 0, sizeof(*proc));
	msg = &buf->msg;
	__builtin_memset(msg, 0, sizeof(*msg));
	msg->hdr.op = VG_MSG_EXEC;
	msg->hdr.ktime = bpf_ktime_get_boot_ns();
	msg->pid = BPF_CORE_READ(task, tgid);
	msg->tid = BPF_CORE_READ(task, pid);
	msg->ppid = BPF_CORE_READ(task, real_parent, tgid);
	msg->flags = VG_FLAG_EXECVE;
	msg->auid = bpf_core_field_exists(task->loginuid) ? BPF_CORE_READ(task, loginuid.val)
							 : 0xffffffff;
	msg->cgroup_id = bpf_get_current_cgroup_id();
	vg_read_creds(task, &msg->creds);
	vg_read_namespaces(task, &msg->ns);
	msg->nspid = vg_task_upid(BPF_CORE_READ(task, group_leader)).nr;

	off = vg_read_cgroup_name(task, buf, &msg->flags);
	msg->cgroup_len = off;

	fs = BPF_CORE_READ(task, fs);
	bpf_probe_read_kernel(&root, sizeof(root), &fs->root);
	bpf_probe_read_kernel(&pwd, sizeof(pwd), &fs->pwd);
	bpf_probe_read_kernel(&exe, sizeof(exe), &bprm->file->f_path);

	vg_proc_binary(&exe, &root, &msg->flags, proc);
	msg->path_len = vg_copy_filename(buf, off, bprm);
	if (!msg->path_len)
		msg->flags |= VG_FLAG_ERROR_FILENAME;
	off += msg->path_len;
	msg->cwd_len = vg_copy_path(buf, off, &pwd, &root, &msg->flags);
	if (!msg->cwd_len)
		msg->flags |= VG_FLAG_ROOTCWD;
	off += msg->cwd_len;
	msg->args_len = vg_read_args(task, buf, off, msg);
	off += msg->args_len;

	proc->flags = VG_PROCF_CAPS | VG_PROCF_NS;
	proc->ns = msg->ns;
	proc->caps[0] = msg->creds.cap_effective;
	proc->caps[1] = msg->creds.cap_inheritable;
	proc->caps[2] = msg->creds.cap_permitted;
	tgid = msg->pid;
	bpf_map_update_elem(&vg_procs, &tgid, proc, BPF_ANY);

	size = sizeof(*msg) + off;
	if (size > sizeof(*buf))
		size = sizeof(*buf);
	msg->hdr.size = size;
	return vg_send(buf, size);
}

/* A fork child runs its parent's binary until it execs. Its namespaces are recorded as
 * they are at fork (a child cloned into new namespaces starts from those), as Tetragon
 * records them. */
static __always_inline void vg_procs_inherit(__u32 parent_tgid, struct task_struct *child,
					     __u32 child_tgid)
{
	struct vg_proc *pp = bpf_map_lookup_elem(&vg_procs, &parent_tgid);

	if (!pp || bpf_map_update_elem(&vg_procs, &child_tgid, pp, BPF_ANY))
		return;
	pp = bpf_map_lookup_elem(&vg_procs, &child_tgid);
	if (pp) {
		vg_read_namespaces(child, &pp->ns);
		pp->flags |= VG_PROCF_NS;
	}
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(vg_proc_fork, struct task_struct *parent, struct task_struct *child)
{
	struct vg_clone_msg msg = {};

	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0; /* a new thread, not a new process */
	msg.hdr.op = VG_MSG_CLONE;
	msg.hdr.size = sizeof(msg);
	msg.hdr.ktime = bpf_ktime_get_boot_ns();
	msg.pid = BPF_CORE_READ(child, tgid);
	msg.tid = BPF_CORE_READ(child, pid);
	msg.ppid = BPF_CORE_READ(child, real_parent, tgid);
	msg.start_ktime = BPF_CORE_READ(child, start_boottime);
	vg_procs_inherit(BPF_CORE_READ(parent, tgid), child, msg.pid);
	return vg_send(&msg, sizeof(msg));
}

/*
 * sched_process_exit runs for every thread, after do_exit() decremented
 * signal->live: zero means this is the last thread of the group. (6.16+ also pass
 * group_dead as a second argument; reading `live` works on every kernel. Two threads
 * exiting at once may both see zero: user space drops the duplicate.)
 */
SEC("tp_btf/sched_process_exit")
int BPF_PROG(vg_proc_exit, struct task_struct *task)
{
	struct vg_exit_msg msg = {};

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	msg.hdr.op = VG_MSG_EXIT;
	msg.hdr.size = sizeof(msg);
	msg.hdr.ktime = bpf_ktime_get_boot_ns();
	msg.pid = BPF_CORE_READ(task, tgid);
	msg.tid = BPF_CORE_READ(task, pid);
	msg.exit_code = BPF_CORE_READ(task, exit_code);
	bpf_map_delete_elem(&vg_procs, &msg.pid);
	return vg_send(&msg, sizeof(msg));
}

/* --cgroup-rate's THROTTLE_STOP: run by user space with BPF_PROG_TEST_RUN, never attached. */
SEC("raw_tp")
int vg_rate_sweep(void *ctx)
{
	return vg_throttle_sweep_all();
}
