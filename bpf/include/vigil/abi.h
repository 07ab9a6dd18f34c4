/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * abi.h - every type that crosses the BPF <-> Python boundary.
 *
 * Python never reads this file: `make abi` compiles bpf/abi_anchor.bpf.c, reads the
 * BTF of the result and writes src/vigil/abi/_generated.py (struct formats, field
 * offsets, enums). tests/unit/test_abi.py checks the generated file against the BTF of
 * every shipped object. Edit here, regenerate, never edit the generated file.
 *
 * Rules: fixed-width types only, explicit padding, constants Python needs are enums
 * (enums reach BTF, #defines do not). Every ring-buffer record starts with vg_msg_hdr.
 */
#ifndef VIGIL_ABI_H
#define VIGIL_ABI_H

/* Message opcodes: the same numbers as Tetragon's, so metric labels match. */
enum vg_msg_op {
	VG_MSG_UNSPEC = 0,
	VG_MSG_EXEC = 5,
	VG_MSG_EXIT = 7,
	VG_MSG_GENERIC_KPROBE = 13,
	VG_MSG_GENERIC_TRACEPOINT = 14,
	VG_MSG_GENERIC_UPROBE = 15,
	VG_MSG_GENERIC_LSM = 16,
	VG_MSG_CLONE = 23,
	VG_MSG_DATA = 24,
	VG_MSG_CGROUP = 25,
	VG_MSG_THROTTLE = 27,
	VG_MSG_OP_MAX = 32, /* size of per-op counter arrays */
};

/* Sizes of the exec record's variable tail. */
enum vg_limits {
	VG_NAME_MAX = 256,      /* one path component incl. NUL */
	VG_PATH_MAX = 4096,     /* a whole path in the tail */
	VG_PATH_DEPTH = 64,     /* components walked before giving up */
	VG_ARGS_MAX = 16128,    /* argv bytes captured at most (mask + this < VG_DATA_MAX) */
	VG_CGROUP_NAME_MAX = 256,
	VG_DATA_MAX = 32512,    /* exec tail: header + tail fit one 32 KiB per-CPU value */
	VG_OFF_MASK = 16383,    /* offsets into the tail are masked with this */
};

/* Process flags, Tetragon's bit values (see vigil.process.model.ExecFlag). */
enum vg_exec_flag {
	VG_FLAG_EXECVE = 0x1,
	VG_FLAG_TRUNC_ARGS = 0x10,
	VG_FLAG_ERROR_FILENAME = 0x100,
	VG_FLAG_ERROR_ARGS = 0x200,
	VG_FLAG_NOCWD = 0x800,
	VG_FLAG_ROOTCWD = 0x1000,
	VG_FLAG_ERROR_CWD = 0x2000,
	VG_FLAG_ERROR_CGROUP_NAME = 0x10000,
	VG_FLAG_ERROR_PATH_RESOLUTION_CWD = 0x400000,
	/* vigil-only, never exported: the path walk hit VG_PATH_DEPTH / VG_PATH_MAX */
	VG_FLAG_TRUNC_PATH = 0x40000000,
};

/* Why a BPF program could not deliver a record (per opcode counters in vg_stats). */
enum vg_drop_reason {
	VG_DROP_RINGBUF_FULL = 0, /* bpf_ringbuf_output failed: consumer too slow */
	VG_DROP_READ_ERROR = 1,   /* a kernel/user read failed; the record was still sent */
	VG_DROP_THROTTLED = 2,    /* suppressed by per-cgroup rate limiting */
	VG_DROP_REASON_MAX = 4,
};

struct vg_msg_hdr {
	__u8 op;      /* enum vg_msg_op */
	__u8 pad0;
	__u16 pad1;
	__u32 size;   /* whole record, header included */
	__u64 ktime;  /* bpf_ktime_get_boot_ns() when the record was made */
};

struct vg_creds {
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__u32 suid;
	__u32 sgid;
	__u32 fsuid;
	__u32 fsgid;
	__u32 securebits;
	__u32 user_ns_level;
	__u32 user_ns_uid;
	__u32 user_ns_gid;
	__u32 user_ns_inum;
	__u32 pad;
	__u64 cap_permitted;
	__u64 cap_effective;
	__u64 cap_inheritable;
};

struct vg_namespaces {
	__u32 uts;
	__u32 ipc;
	__u32 mnt;
	__u32 pid;
	__u32 pid_for_children;
	__u32 net;
	__u32 time;
	__u32 time_for_children;
	__u32 cgroup;
	__u32 user;
};

/*
 * VG_MSG_EXEC, sent from sched_process_exec. The tail `data` holds, in order:
 *   cgroup name (cgroup_len bytes, no NUL)
 *   binary path components leaf first, each NUL-terminated (path_len bytes)
 *   cwd components leaf first, each NUL-terminated (cwd_len bytes; 0 = "/")
 *   argv as in /proc/pid/cmdline, NUL-separated (args_len bytes)
 */
struct vg_exec_msg {
	struct vg_msg_hdr hdr;
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 ppid;      /* real_parent's tgid */
	__u32 flags;     /* enum vg_exec_flag */
	__u32 auid;
	__u16 cgroup_len;
	__u16 path_len;
	__u16 cwd_len;
	__u16 args_len;
	__u32 args_size; /* argv bytes in the process (args_len may be less) */
	__u64 cgroup_id;
	struct vg_creds creds;
	struct vg_namespaces ns;
};

/* VG_MSG_CLONE, sent from sched_process_fork for a new thread group. */
struct vg_clone_msg {
	struct vg_msg_hdr hdr;
	__u32 pid;   /* child tgid */
	__u32 tid;
	__u32 ppid;  /* child's real_parent tgid */
	__u32 pad;
	__u64 start_ktime; /* child's start_boottime: its ktime for exec_id */
};

/* VG_MSG_EXIT, sent from sched_process_exit when the last thread of a group exits. */
struct vg_exit_msg {
	struct vg_msg_hdr hdr;
	__u32 pid;       /* tgid */
	__u32 tid;       /* the thread that exited last */
	__u32 exit_code; /* wait(2)-style: status << 8 | core 0x80 | signal */
	__u32 pad;
};

/* Per-CPU counters, one entry; read and summed by Python at scrape time. */
struct vg_stats {
	__u64 sent[VG_MSG_OP_MAX];
	__u64 drops[VG_MSG_OP_MAX * VG_DROP_REASON_MAX]; /* [op * VG_DROP_REASON_MAX + reason] */
};

/* Load-time configuration, one per object, in .rodata (set before load). */
struct vg_config {
	__u32 max_args;     /* argv bytes to capture, <= VG_ARGS_MAX */
	__u32 wakeup_bytes; /* 0: wake the consumer per record; else when this much is pending */
};

#endif /* VIGIL_ABI_H */
