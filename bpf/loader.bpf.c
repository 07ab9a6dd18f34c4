// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * loader.bpf.c - spec.loader: a record (VG_MSG_LOADER) for each file a process maps
 * executable with mmap(2), which is how the dynamic loader maps every shared library
 * (and dlopen() a plugin). Without kprobes (perf_event_mmap_output) the syscall's own
 * tracepoints are used: sys_enter_mmap notes the file behind the fd of a PROT_EXEC file
 * mapping, sys_exit_mmap sends the record when the call succeeded. The file's path is
 * resolved here (the fd may be closed right after); its build id is read by user space
 * from the file's ELF note.
 *
 * Not seen: the program and its ELF interpreter, which the kernel maps during execve
 * (process_exec reports them), and a mapping made executable later with mprotect(2).
 */
#include "vigil/common.bpf.h"
#include "vigil/path.bpf.h"

#define VG_PROT_EXEC 0x4
#define VG_MAP_ANONYMOUS 0x20
#define VG_LOADER_CALLS 16384

/* the policy's hook id, echoed in records */
const volatile __u32 vg_loader_hook_id SEC(".rodata.loader") = 0;

struct vg_loader_buf {
	struct vg_loader_msg msg;
	char path[VG_PATH_REGION];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_loader_buf);
} vg_loader_heap SEC(".maps");

VG_DEFINE_PATH_WALK(vg_loader_path, vg_loader_heap, struct vg_loader_buf, path)

/* thread -> the file an executable mmap(2) in flight maps */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VG_LOADER_CALLS);
	__type(key, __u64);
	__type(value, __u64);
} vg_loader_calls SEC(".maps");

static __always_inline struct file *vg_loader_fd_file(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct files_struct *files = BPF_CORE_READ(task, files);
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd < 0 || fd >= max_fds)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xfffff]);
	return file;
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int vg_loader_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), f;
	unsigned long prot = ctx->args[2], flags = ctx->args[3];
	long fd = (int)ctx->args[4];
	struct file *file;

	if (!(prot & VG_PROT_EXEC) || (flags & VG_MAP_ANONYMOUS) || fd < 0)
		return 0;
	file = vg_loader_fd_file(fd);
	if (!file)
		return 0;
	f = (__u64)file;
	bpf_map_update_elem(&vg_loader_calls, &id, &f, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int vg_loader_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid(), *f;
	struct task_struct *task;
	struct vg_loader_buf *b;
	struct vg_loader_msg *m;
	struct path fpath = {}, root = {};
	struct inode *inode;
	struct file *file;
	__u32 zero = 0, trunc = 0, pos, len = 0;

	f = bpf_map_lookup_elem(&vg_loader_calls, &id);
	if (!f)
		return 0;
	file = (struct file *)*f;
	bpf_map_delete_elem(&vg_loader_calls, &id);
	if ((unsigned long)ctx->ret >= (unsigned long)-4095) /* the mapping failed */
		return 0;
	b = bpf_map_lookup_elem(&vg_loader_heap, &zero);
	if (!b)
		return 0;
	m = &b->msg;
	__builtin_memset(m, 0, offsetof(struct vg_loader_msg, path));
	m->hdr.op = VG_MSG_LOADER;
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = id >> 32;
	m->tid = (__u32)id;
	m->hook_id = vg_loader_hook_id;
	inode = BPF_CORE_READ(file, f_inode);
	m->ino = BPF_CORE_READ(inode, i_ino);
	m->size = BPF_CORE_READ(inode, i_size);
	m->dev = BPF_CORE_READ(inode, i_sb, s_dev);
	task = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_INTO(&root, task, fs, root);
	BPF_CORE_READ_INTO(&fpath, file, f_path);
	pos = vg_loader_path(&fpath, &root, &trunc);
	if (trunc)
		m->flags |= VG_LOADER_TRUNC;
	if (pos < VG_PATH_MAX) {
		len = (VG_PATH_MAX - pos) & (VG_PATH_MAX - 1);
		if (bpf_probe_read_kernel(m->path, len, &b->path[pos & (VG_PATH_MAX - 1)]))
			len = 0;
	}
	m->path_len = len;
	len = offsetof(struct vg_loader_msg, path) + (len & (VG_PATH_MAX - 1));
	m->hdr.size = len;
	vg_send(m, len);
	return 0;
}
