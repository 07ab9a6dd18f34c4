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
	VG_MSG_LOADER = 26,
	VG_MSG_GENERIC_USDT = 28,
	VG_MSG_THROTTLE = 27,
	VG_MSG_CREDS = 29,      /* vigil-only: a process changed its credentials */
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
	VG_CGROUP_RATE_ENTRIES = 8192, /* cgroups tracked by --cgroup-rate (LRU) */
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
	VG_DROP_FOLLOW_FULL = 3,  /* a policy hook's follow map was full: a descendant of a
				   * followChildren / followForks match is not followed */
	VG_DROP_REASON_MAX = 4,
};

/* vg_msg_hdr.flags */
enum vg_hdr_flag {
	/* sent while its cgroup was throttled (exits and credential changes only: they keep
	 * the process cache right, user space updates the cache but exports no event) */
	VG_HDR_THROTTLED = 0x1,
};

/* process_throttle's `type`, Tetragon's ThrottleType values. */
enum vg_throttle_type {
	VG_THROTTLE_UNKNOWN = 0,
	VG_THROTTLE_START = 1,
	VG_THROTTLE_STOP = 2,
};

struct vg_msg_hdr {
	__u8 op;      /* enum vg_msg_op */
	__u8 flags;   /* enum vg_hdr_flag */
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
 * The host's namespaces as the kernel knows them, written once by hostns.bpf.c's task
 * iterator for hosts where /proc/1/ns cannot be read. `pid1` is pid 1 of the initial
 * pid namespace (what /proc/1/ns shows, the host_ns of Tetragon's policies); `init` is
 * init_task's (pid 0): the initial namespaces, which every kernel thread shares.
 */
enum vg_host_ns_flag {
	VG_HOST_NS_PID1 = 1, /* pid1 is filled in */
	VG_HOST_NS_INIT = 2, /* init is filled in */
};

struct vg_host_ns {
	struct vg_namespaces pid1;
	struct vg_namespaces init;
	__u32 flags;  /* enum vg_host_ns_flag */
	__u32 hops;   /* parents walked from the reader to pid 0 */
};

/*
 * VG_MSG_EXEC, sent from sched_process_exec. The tail `data` holds, in order:
 *   cgroup name (cgroup_len bytes, no NUL)
 *   the executed name, bprm->filename: the path given to execve, not resolved,
 *     relative to the cwd when it does not start with "/" (path_len bytes, no NUL)
 *   cwd (cwd_len bytes; 0 = "/")
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
	__u32 nspid;     /* tgid in the task's own pid namespace (a container's: 1 for its init) */
	__u32 pad;
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

/*
 * VG_MSG_THROTTLE: a cgroup went over --cgroup-rate (START, sent from the event that
 * crossed the limit, with the cgroup's name) or has stayed under it for the quiet
 * period (STOP, sent by the vg_rate_sweep program, no name: user space knows it
 * from the START).
 */
struct vg_throttle_msg {
	struct vg_msg_hdr hdr;
	__u64 cgroup_id;
	__u32 type;      /* enum vg_throttle_type */
	__u16 name_len;  /* bytes of name used (START), no NUL */
	__u16 pad;
	__u64 dropped;   /* STOP: records suppressed since the START */
	char name[VG_CGROUP_NAME_MAX]; /* the cgroup's directory name (kernfs node) */
};

/* Value of the vg_cgroup_rate map, keyed by cgroup id (u64); shared by every object. */
struct vg_cgroup_rate {
	__u64 window_start; /* ktime the current counting window began */
	__u64 count;        /* records counted in the current window */
	__u64 last_over;    /* ktime of the last record over the limit */
	__u64 dropped;      /* records suppressed since the START */
	__u32 throttled;    /* 1 from START until STOP */
	__u32 pad;
};

/*
 * VG_MSG_CREDS: a task changed its credentials after exec. Sent by the base sensor from
 * commit_creds where the kernel allows a kprobe or fentry there (the new credentials,
 * when they differ from the current ones, not during execve), else from the syscall
 * exit tracepoints of the credential syscalls when the call succeeded
 * (setfsuid/setfsgid: when the id really changed; the task's credentials after it). `syscall` says which call (enum vg_cred_call). User space compares with what
 * it knows and ignores a record that changes nothing (glibc's setxid makes every thread
 * of a process repeat the call).
 */
enum vg_cred_call {
	VG_CRED_SETUID = 1,
	VG_CRED_SETGID = 2,
	VG_CRED_SETREUID = 3,
	VG_CRED_SETREGID = 4,
	VG_CRED_SETRESUID = 5,
	VG_CRED_SETRESGID = 6,
	VG_CRED_SETFSUID = 7,
	VG_CRED_SETFSGID = 8,
	VG_CRED_SETGROUPS = 9,
	VG_CRED_CAPSET = 10,
	VG_CRED_PRCTL = 11,      /* PR_SET_SECUREBITS, PR_SET_KEEPCAPS */
	VG_CRED_COMMIT = 12,     /* commit_creds (kprobe/fentry, where the kernel allows them):
				  * any change, whatever the path; syscall_nr says the call */
};

enum vg_cred_limits {
	VG_CRED_GROUPS = 16,     /* supplementary groups carried in the record */
};

struct vg_creds_msg {
	struct vg_msg_hdr hdr;
	__u32 pid;       /* tgid */
	__u32 tid;       /* the thread that made the call */
	__u32 call;      /* enum vg_cred_call */
	__u32 ngroups;   /* supplementary groups the task has (groups[] holds the first ones) */
	__s32 syscall_nr;/* VG_CRED_COMMIT: the syscall the task is in (-1: none known) */
	__u32 pad;
	struct vg_creds creds;
	__u32 groups[VG_CRED_GROUPS];
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
	__u32 cgroup_rate;  /* --cgroup-rate N: records per interval per cgroup; 0: off */
	/* 0: a task's cgroup is its cgroup-v2 one; else 1 + the cgroup_subsys_id of the v1
	 * controller whose hierarchy names containers (v1 and hybrid hosts, where the v2
	 * hierarchy holds no process) */
	__u32 cgroup_subsys;
	__u64 cgroup_rate_interval_ns; /* --cgroup-rate ,INTERVAL */
	__u64 cgroup_rate_quiet_ns;    /* STOP once no record was over the limit this long */
};


/* ---- policy hooks (generic.bpf.c) ------------------------------------------------ */

enum vg_gen_limits {
	VG_GEN_ARGS = 5,        /* args captured per hook (Tetragon: args + data <= 5) */
	VG_GEN_SELECTORS = 5,   /* selectors per hook */
	VG_GEN_MATCH_ARGS = 5,  /* matchArgs per selector */
	VG_GEN_MATCH_RET = 2,   /* matchReturnArgs per selector */
	VG_GEN_VALUES = 4,      /* inline values per numeric matchArg / matchPIDs / namespace */
	VG_GEN_MATCH_VALUES = 8,/* inline numbers of one matchArg: 4 values or 4 (min, max) ranges */
	VG_GEN_NS = 4,          /* matchNamespaces filters per selector */
	VG_GEN_CAPS = 2,        /* matchCapabilities filters per selector */
	VG_GEN_PIDF = 4,        /* matchPIDs filters per selector (all must hold) */
	VG_GEN_ACTIONS = 3,     /* actions per selector */
	VG_GEN_RAW_ARGS = 6,    /* raw argument slots fetched per call */
	VG_GEN_STR_MAX = 4096,  /* bytes of one string / buffer argument */
	VG_GEN_IOVECS = 7,      /* char_iovec: iovec entries read (Tetragon's 7) */
	VG_GEN_DATA_MAX = 24576,/* record tail: VG_GEN_ARGS arguments */
	VG_GEN_OFF_MASK = 16383,
	VG_STR_KEY = 256,       /* bytes of a string in the equality map key */
	VG_PFX_KEY = 248,       /* bytes of a string in the prefix/postfix trie keys */
	VG_SUB_KEY = 100,       /* bytes of a SubString value and its NUL (Tetragon: < 100 chars) */
	VG_UNIX_PATH_MAX = 108, /* sun_path of a struct sockaddr_un */
	VG_BIN_MAX = 256,       /* binary path kept per process for matchBinaries */
	VG_PROCS_ENTRIES = 32768,
	VG_FOLLOW_ENTRIES = 32768, /* followed processes per hook (vg_follow) */
};

/* Where a hook's raw argument values come from. */
enum vg_hook_kind {
	VG_HOOK_TRACEPOINT = 1, /* classic tracepoint: fields at offsets in the record */
	VG_HOOK_RAW_TP = 2,     /* raw tracepoint: u64 args[] */
	VG_HOOK_UPROBE = 3,     /* pt_regs function arguments */
	VG_HOOK_KPROBE = 4,     /* kprobe / kprobe.multi: pt_regs of a kernel function */
	VG_HOOK_BTF = 5,        /* fentry / fexit / fmod_ret / lsm: bpf_get_func_arg() */
};

/* vg_hook_cfg.flags */
enum vg_hook_flag {
	/* fmod_ret + fexit pair: fmod_ret enforces (Override, signals) without posting, the
	 * fexit posts the merged record (arguments + return) without enforcing again */
	VG_HOOKF_PAIR = 0x1,
	/* a list hook (call: list:NAME): the record's `func` says which function fired, the
	 * attach cookie (kprobes) or the syscall id (raw_syscalls, whose entry program runs
	 * only for the ids in vg_int_set set 0) */
	VG_HOOKF_LIST = 0x2,
	/* a syscall function (__x64_sys_X) on a BPF trampoline or a kprobe: its one
	 * parameter is the struct pt_regs * of the syscall; arguments are read from those
	 * registers */
	VG_HOOKF_SYSWRAP = 0x4,
};

/* vg_selector_cfg.follow: the selector also matches descendants (vg_follow bit = selector) */
enum vg_follow_flag {
	VG_FOLLOW_BIN = 0x1,  /* matchBinaries followChildren */
	VG_FOLLOW_PIDS = 0x2, /* matchPIDs followForks (one of the selector's pid filters) */
	VG_FOLLOW_PBIN = 0x4, /* matchParentBinaries followChildren */
	/* vg_follow bits: bit si for selector si's followChildren; bit VG_FOLLOW_PID_BIT +
	 * si * VG_GEN_PIDF + k for its k-th matchPIDs filter with followForks; for its
	 * matchParentBinaries followChildren, bit VG_FOLLOW_PBIN_BIT + si (selectors 0..2)
	 * or VG_FOLLOW_PBIN_BIT2 + si - 3 (selectors 3, 4): the bits the others leave free */
	VG_FOLLOW_PID_BIT = 8,
	VG_FOLLOW_PBIN_BIT = 5,
	VG_FOLLOW_PBIN_BIT2 = 28,
};

/* Per-hook action counters (map vg_gen_counts), for ListTracingPolicies' stats. */
enum vg_gen_count {
	VG_GC_POST = 0,            /* events written */
	VG_GC_NOPOST = 1,          /* matched, not written (NoPost) */
	VG_GC_SIGNAL = 2,          /* Sigkill / Signal sent */
	VG_GC_MONITOR_SIGNAL = 3,  /* ... only reported (monitor mode) */
	VG_GC_OVERRIDE = 4,        /* Override applied */
	VG_GC_MONITOR_OVERRIDE = 5,
	VG_GC_RATE_LIMITED = 6,    /* Post suppressed by rateLimit */
	VG_GC_SET = 7,             /* Set wrote a USDT argument */
	VG_GC_MAX = 8,
};

/* Value of a hook's map vg_gen_mode: its policy mode, switchable at run time. */
struct vg_hook_mode {
	__u32 monitor;  /* 1: enforcement actions are only reported (counted as monitor_*) */
};

struct vg_gen_counts {
	__u64 n[VG_GC_MAX];
};

/* How one argument is read and put in the record. */
enum vg_arg_kind {
	VG_ARG_NONE = 0,
	VG_ARG_INT = 1,       /* integer of `size` bytes (VG_ARGF_SIGNED) */
	VG_ARG_USTR = 2,      /* user-space NUL-terminated string pointer */
	VG_ARG_UBUF = 3,      /* user-space buffer; length from arg `size_arg` */
	VG_ARG_FD = 4,        /* file descriptor: resolved to its path in the kernel */
	VG_ARG_SOCKADDR = 5,  /* user-space struct sockaddr * */
	VG_ARG_DATA_LOC = 6,  /* tracepoint __data_loc string inside the record */
	VG_ARG_KSTR = 7,      /* kernel NUL-terminated string pointer */
	/* kernel objects (kprobe / fentry / lsm hooks); records in struct vg_*_rec or a path */
	VG_ARG_FILE = 8,      /* struct file *: its path (bounded dentry walk, crosses mounts) */
	VG_ARG_PATH = 9,      /* struct path * */
	VG_ARG_DENTRY = 10,   /* struct dentry *: path inside its filesystem */
	VG_ARG_BINPRM = 11,   /* struct linux_binprm *: the file being executed */
	VG_ARG_SOCK = 12,     /* struct sock * (struct socket * with VG_ARGF_SOCKET) -> vg_sock_rec */
	VG_ARG_SKB = 13,      /* struct sk_buff * -> vg_skb_rec */
	VG_ARG_CRED = 14,     /* struct cred * -> vg_creds */
	VG_ARG_CAPS = 15,     /* u64 capability set read at the pointer + offset */
	VG_ARG_BPF_ATTR = 16, /* union bpf_attr * (BPF_PROG_LOAD) -> vg_bpf_rec */
	VG_ARG_BPF_PROG = 17, /* struct bpf_prog * -> vg_bpf_rec */
	VG_ARG_BPF_MAP = 18,  /* struct bpf_map * -> vg_bpf_rec */
	VG_ARG_MODULE = 19,   /* struct module * -> vg_module_rec */
	VG_ARG_LOAD_INFO = 20,/* struct load_info * -> vg_module_rec */
	VG_ARG_KBUF = 21,     /* kernel buffer; length from arg `size_arg` */
	VG_ARG_KSOCKADDR = 22,/* kernel struct sockaddr * (same record as VG_ARG_SOCKADDR) */
	VG_ARG_TP_CHARS = 23, /* tracepoint `char x[N]` field: the string in the record (max_len N) */
	VG_ARG_NETDEV = 24,   /* struct net_device *: its name (a string) */
	VG_ARG_USER_NS = 25,  /* struct user_namespace * -> vg_userns_rec */
	VG_ARG_PERF_EVENT = 26, /* struct perf_event * -> vg_perf_rec */
	VG_ARG_IOV_ITER = 27, /* struct iov_iter *: the bytes of its (first) segment */
	VG_ARG_IOVEC = 28,    /* char_iovec: struct iovec array (user memory); the number of
			       * entries from arg `size_arg`; their bytes, concatenated */
	VG_ARG_SOCKADDR_UN = 29,  /* user-space struct sockaddr_un *: u16 family, then the
				   * path (AF_UNIX only; an abstract name as '@' + name) */
	VG_ARG_KSOCKADDR_UN = 30, /* kernel struct sockaddr * read as a sockaddr_un (same record) */
};

enum vg_arg_flag {
	VG_ARGF_SIGNED = 0x1,
	VG_ARGF_RETURN_COPY = 0x2, /* read the buffer at return (the call filled it) */
	VG_ARGF_SOCKET = 0x4,      /* VG_ARG_SOCK: the pointer is a struct socket */
	VG_ARGF_RES_VALUE = 0x8,   /* resolve: the last member is a value (read `size` bytes) */
	VG_ARGF_RES_DEREF = 0x10,  /* resolve: the last member is a pointer (follow it) */
	VG_ARGF_SRC_TASK = 0x20,   /* data source current_task: the raw value is the task */
	VG_ARGF_SRC_REGS = 0x40,   /* data source pt_regs: the register at `offset` of pt_regs */
	VG_ARGF_RES_USER = 0x80,   /* resolve: the pointers are into user memory (uprobes) */
};

enum vg_res_limits {
	VG_RES_STEPS = 16,         /* offsets of one `resolve` path (a power of two; the
				    * compiler allows Tetragon's 10 path components) */
};

/* Selector operators (values as Tetragon's internal numbering where one exists). */
enum vg_op {
	VG_OP_NONE = 0,
	VG_OP_GT = 1,
	VG_OP_LT = 2,
	VG_OP_EQ = 3,
	VG_OP_NEQ = 4,
	VG_OP_IN = 5,
	VG_OP_NOTIN = 6,
	VG_OP_PREFIX = 8,
	VG_OP_POSTFIX = 9,
	VG_OP_INMAP = 10,
	VG_OP_NOTINMAP = 11,
	VG_OP_MASK = 12,
	VG_OP_SADDR = 13,
	VG_OP_DADDR = 14,
	VG_OP_SPORT = 15,
	VG_OP_DPORT = 16,
	VG_OP_PROTOCOL = 17,
	VG_OP_NOTSPORT = 18,
	VG_OP_NOTDPORT = 19,
	VG_OP_NOTSADDR = 24,
	VG_OP_NOTDADDR = 25,
	VG_OP_NOTPREFIX = 26,
	VG_OP_NOTPOSTFIX = 27,
	VG_OP_FAMILY = 28,
	VG_OP_STATE = 29,
	VG_OP_INRANGE = 31,
	VG_OP_NOTINRANGE = 32,
	VG_OP_SUBSTRING = 33, /* kfunc bpf_strnstr: only in generic_substr*.bpf.o */
	VG_OP_SUBSTRING_IGNCASE = 34, /* kfunc bpf_strncasestr: only in generic_substr_icase.bpf.o */
	VG_OP_CEL = 35,       /* CelExpr: run program `set` of vg_hook_cfg.cel */
	VG_OP_FILETYPE = 36,  /* file / path argument: its inode's i_mode & S_IFMT is in vals */
	VG_OP_NOTFILETYPE = 37,
};

/*
 * CelExpr programs: a CEL expression compiled in user space (vigil.policy.celexpr) to a
 * postfix program over a stack of s64 values, its 32-bit / 64-bit and signed / unsigned
 * typing resolved at compile time (the ops below carry it). Evaluated in the kernel by
 * a bounded loop; the result is the last value left on the stack (non-zero: match).
 */
enum vg_cel_limits {
	VG_GEN_CEL = 4,       /* CelExpr programs per hook */
	VG_CEL_INSNS = 24,    /* instructions per program */
	VG_CEL_STACK = 8,     /* stack depth (the compiler checks its program's depth) */
};

enum vg_cel_op {
	VG_CEL_ARG = 1,       /* push argument `arg` (as read: 32-bit ones sign/zero-extended) */
	VG_CEL_CONST = 2,     /* push imm */
	VG_CEL_ADD = 3,       /* a + b, 64-bit two's complement */
	VG_CEL_SUB = 4,
	VG_CEL_S32 = 5,       /* top = (s64)(s32)top: int32(), and s32 arithmetic wraps */
	VG_CEL_U32 = 6,       /* top = (u64)(u32)top: uint32(), and u32 arithmetic wraps */
	VG_CEL_EQ = 7,
	VG_CEL_NE = 8,
	VG_CEL_LT = 9,        /* signed: int, s32 */
	VG_CEL_LE = 10,
	VG_CEL_LTU = 11,      /* unsigned: uint, u32 */
	VG_CEL_LEU = 12,
	VG_CEL_NOT = 13,      /* bool */
	VG_CEL_AND = 14,      /* both bools (no short circuit: nothing has side effects) */
	VG_CEL_OR = 15,
	VG_CEL_SWAP = 16,     /* exchange the two top values (a > b is b < a) */
};

struct vg_cel_insn {
	__u8 op;        /* enum vg_cel_op */
	__u8 arg;       /* VG_CEL_ARG: index into vg_hook_cfg.args; 0xff: the return value */
	__u8 pad[6];
	__s64 imm;      /* VG_CEL_CONST */
};

struct vg_cel_prog {
	__u8 n;         /* instructions used */
	__u8 pad[7];
	struct vg_cel_insn insn[VG_CEL_INSNS];
};

/* Actions; values are Tetragon's KprobeAction numbers. */
enum vg_action {
	VG_ACT_NONE = 0,
	VG_ACT_POST = 1,
	VG_ACT_SIGKILL = 3,
	VG_ACT_OVERRIDE = 5,
	VG_ACT_GETURL = 7,         /* posted; the agent makes the HTTP request */
	VG_ACT_DNSLOOKUP = 8,      /* posted; the agent makes the DNS lookup */
	VG_ACT_NOPOST = 9,
	VG_ACT_SIGNAL = 10,
	VG_ACT_TRACKSOCK = 11,     /* remember the process owning the socket of arg sock_arg */
	VG_ACT_UNTRACKSOCK = 12,   /* forget it */
	VG_ACT_NOTIFYENFORCER = 13,/* ask the policy's enforcer to act on this thread's syscall */
	VG_ACT_CLEANUPENFORCER = 14,/* CleanupEnforcerNotification: drop the thread's pending
				     * notification (its enforcer will not act on it) */
	VG_ACT_SET = 15,        /* write a USDT argument's memory (bpf_probe_write_user) */
};

/* vg_action_cfg.flags: what a Post adds to the record */
enum vg_action_flag {
	VG_ACTF_KSTACK = 0x1,      /* kernelStackTrace: kernel return addresses */
	VG_ACTF_USTACK = 0x2,      /* userStackTrace: user return addresses */
	VG_ACTF_IMA = 0x4,         /* imaHash (BPF LSM): the IMA hash of the hook's file */
};

enum vg_stack_limits {
	VG_STACK_DEPTH = 64,       /* frames kept per stack (Tetragon: 127; deeper ones cut) */
	VG_SOCKTRACK_ENTRIES = 32768, /* tracked sockets per policy (LRU) */
	VG_ENFORCER_ENTRIES = 32768,  /* pending enforcer notifications per policy (LRU) */
	VG_ENFORCER_CALLS = 512,      /* syscalls one enforcer lists */
	VG_IMA_DIGEST = 64,           /* bytes of an IMA digest at most (sha512) */
	VG_IMA_ENTRIES = 1024,        /* hashes computed, not yet posted (per hook, LRU) */
};

/* imaHash: a file's IMA digest, in the record's tail at ima_off (VG_GENF_IMA). */
struct vg_ima_rec {
	__s32 algo;       /* enum hash_algo, as bpf_ima_file_hash returns it */
	__u32 pad;
	__u8 digest[VG_IMA_DIGEST]; /* the algorithm's digest size is used */
};

/* An enforcer's counters (map vg_enf_counts) */
enum vg_enf_count {
	VG_ENF_SIGNAL = 0,         /* argSig sent */
	VG_ENF_OVERRIDE = 1,       /* argError returned instead of running the syscall */
	VG_ENF_MAX = 2,
};

/* A tracked socket's owner (map vg_socktrack, key: the struct sock pointer). */
struct vg_sock_owner {
	__u32 pid;
	__u32 tid;
};

/* An enforcer notification (map vg_enforcer, key: the thread's pid_tgid). */
struct vg_enforcer_note {
	__s32 error;      /* argError: the syscall's return value (fmod_ret), 0: none */
	__u32 sig;        /* argSig: signal sent at the syscall, 0: none */
	__u32 hook_id;    /* the notifying hook */
	__u32 pad;
};

enum vg_rate_scope {
	VG_RATE_THREAD = 0,
	VG_RATE_PROCESS = 1,
	VG_RATE_GLOBAL = 2,
};

struct vg_arg_cfg {
	__u8 kind;      /* enum vg_arg_kind */
	__u8 src;       /* raw slot: syscall/raw_tp/uprobe argument index; tracepoint: unused */
	__u8 size;      /* VG_ARG_INT: 1, 2, 4 or 8 bytes */
	__u8 flags;     /* enum vg_arg_flag */
	__u16 offset;   /* VG_HOOK_TRACEPOINT: field offset in the record */
	__u8 size_arg;  /* VG_ARG_UBUF: index of the arg holding the length; 0xff: none */
	__u8 nres;      /* resolve: steps used in res_off (0: the argument itself) */
	__u32 max_len;  /* strings and buffers: bytes to read at most (<= VG_GEN_STR_MAX) */
	/* resolve (BTF field path): v = *(u64 *)(v + res_off[k]) for k < nres - 1, then
	 * v += res_off[nres - 1] and, by flag, follow a pointer or read a value there */
	__u32 res_off[VG_RES_STEPS];
};

struct vg_match_arg {
	__u8 arg;       /* index into vg_hook_cfg.args, or 0xff: the return value */
	__u8 op;        /* enum vg_op */
	__u8 nvals;     /* inline values used */
	__u8 head_len;  /* string Equal / Prefix: 1..8, vals[] hold the first head_len bytes
			 * of each value (little endian); 0: no head check */
	__u32 set;      /* string / address / int-set id in this object's maps */
	__s64 vals[VG_GEN_MATCH_VALUES]; /* numbers; ranges as (min, max) pairs; string heads */
};

struct vg_ns_match {
	__u8 ns;        /* index in struct vg_namespaces order */
	__u8 op;        /* VG_OP_IN / VG_OP_NOTIN */
	__u8 nvals;
	__u8 pad;
	__u32 vals[VG_GEN_VALUES];
};

struct vg_pid_match {
	__u8 op;        /* VG_OP_IN / VG_OP_NOTIN */
	__u8 ns;        /* isNamespacePID: compare the pid in the process's own namespace */
	__u8 nvals;
	__u8 follow;    /* followForks: descendants (forked after a listed pid) match too */
	__u32 vals[VG_GEN_VALUES];
};

struct vg_cap_match {
	__u8 set;       /* 0 effective, 1 inheritable, 2 permitted */
	__u8 op;        /* VG_OP_IN / VG_OP_NOTIN */
	__u8 change;    /* matchCapabilityChanges: compared with the caps at exec (vg_proc) */
	__u8 pad;
	__u32 userns;   /* isNamespaceCapability: the host's user namespace inum; a task in it
			 * never matches. 0: any user namespace */
	__u64 mask;
};

struct vg_action_cfg {
	__u8 action;    /* enum vg_action */
	__u8 scope;     /* enum vg_rate_scope (Post with rateLimit) */
	__u8 flags;     /* enum vg_action_flag */
	__u8 sock_arg;  /* TrackSock / UntrackSock: index of the sock argument (argSock) */
	__u32 arg;      /* Signal: the signal number; Override, NotifyEnforcer: the error (s32);
	                   Set: the value */
	__u64 rate_ns;  /* Post: suppress repeats within this window; 0: off */
	__u32 sig;      /* NotifyEnforcer: argSig (0: none) */
	__u16 index;    /* Set: the USDT argument to write */
	__u16 pad;
};

struct vg_selector_cfg {
	__u8 nargs;
	__u8 nret;
	__u8 bin_op;    /* VG_OP_NONE, IN, NOTIN, PREFIX, NOTPREFIX, POSTFIX, NOTPOSTFIX */
	__u8 npidf;     /* matchPIDs filters used in pids[] */
	__u8 pbin_op;   /* matchParentBinaries: bin_op's operators on the binary of the
			 * caller's parent (task->real_parent's process in vg_procs) */
	__u8 nsc_op;    /* matchNamespaceChanges: VG_OP_IN / VG_OP_NOTIN (VG_OP_NONE: none) */
	__u8 nns;
	__u8 ncaps;
	__u8 nactions;
	__u8 follow;    /* enum vg_follow_flag */
	__u16 nsc_mask; /* its namespaces: bit i = the i-th field of struct vg_namespaces */
	__u32 bin_set;  /* string set of matchBinaries values */
	__u32 pbin_set; /* string set of matchParentBinaries values */
	struct vg_pid_match pids[VG_GEN_PIDF];
	struct vg_match_arg args[VG_GEN_MATCH_ARGS];
	struct vg_match_arg ret[VG_GEN_MATCH_RET];
	struct vg_ns_match ns[VG_GEN_NS];
	struct vg_cap_match caps[VG_GEN_CAPS];
	struct vg_action_cfg actions[VG_GEN_ACTIONS];
	/* matchReturnActions: run with actions[] by the program that has the return value,
	 * once the selector (its matchReturnArgs too) matched */
	struct vg_action_cfg ret_actions[VG_GEN_ACTIONS];
	__u8 nret_actions;
	__u8 pad_ract[7];
};

/* One hook of one policy: the .rodata of one loaded copy of generic.bpf.o. */
struct vg_hook_cfg {
	__u32 hook_id;    /* user space's (policy, hook) id, echoed in records */
	__u8 op;          /* record opcode: VG_MSG_GENERIC_KPROBE / _TRACEPOINT / _UPROBE */
	__u8 kind;        /* enum vg_hook_kind */
	__u8 nargs;
	__u8 nsel;
	__u8 has_return;  /* the exit program runs the selectors with the return value */
	__u8 pad0;        /* (the policy mode is live in map vg_gen_mode, not here) */
	__u8 flags;       /* enum vg_hook_flag */
	__u8 follow;      /* bit si: selector si follows (vg_follow_flag set in sel[si].follow) */
	__s32 syscall_nr; /* raw_syscalls hooks: only this id (-1: any) */
	__u8 ret_size;    /* kretprobe / fexit: bytes of the return type (0: 8) */
	__u8 ret_flags;   /* VG_ARGF_SIGNED */
	__u8 ret_kind;    /* VG_ARG_INT (0 too) or VG_ARG_USTR / VG_ARG_KSTR: a string return
			   * value, read at return into the record (ret_off / ret_len) */
	__u8 ncel;        /* CelExpr programs used in cel[] */
	struct vg_arg_cfg args[VG_GEN_ARGS];
	struct vg_selector_cfg sel[VG_GEN_SELECTORS];
	struct vg_cel_prog cel[VG_GEN_CEL];
	__u8 ret_action;  /* returnArgAction: VG_ACT_TRACKSOCK / VG_ACT_UNTRACKSOCK on the
			   * returned struct sock * (0: none) */
	__u8 ima_arg;     /* imaHash: the argument (VG_ARG_FILE / VG_ARG_BINPRM) whose file
			   * vg_gen_lsm_ima hashes */
	__u8 chunk_args;  /* maxData: bit i set: argument i is a buffer whose bytes beyond the
			   * record's VG_GEN_STR_MAX follow in VG_MSG_DATA records (each record
			   * names its argument); 0: none */
	__u8 pad_ra[5];
};

/*
 * VG_MSG_LOADER (spec.loader): a file mapped executable by mmap(2). The path follows
 * the fixed part; user space reads the file's build id (cached by dev, inode, size).
 */
struct vg_loader_msg {
	struct vg_msg_hdr hdr;
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 hook_id;
	__u16 path_len;  /* bytes of path, no NUL */
	__u8 flags;      /* VG_LOADER_TRUNC: the path walk stopped early */
	__u8 pad;
	__u64 ino;
	__u64 size;      /* i_size when mapped */
	__u32 dev;       /* the superblock's s_dev (kernel encoding: major << 20 | minor) */
	__u32 pad2;
	char path[VG_PATH_MAX];
};

enum vg_loader_flag {
	VG_LOADER_TRUNC = 1,
};

/* Record of a policy hook (VG_MSG_GENERIC_*): fixed part, then argument bytes. */
struct vg_generic_msg {
	struct vg_msg_hdr hdr;
	__u32 pid;
	__u32 tid;
	__u32 hook_id;
	__u8 selector;  /* index of the selector that matched */
	__u8 action;    /* enum vg_action that decided (POST, SIGKILL, SIGNAL, ...) */
	__u8 nargs;
	__u8 flags;     /* enum vg_gen_flag */
	__s64 ret;      /* return value, when has_return */
	__u16 arg_off[VG_GEN_ARGS]; /* offset of argument i in the tail */
	__u16 arg_len[VG_GEN_ARGS]; /* bytes of argument i in the tail */
	__u32 orig_len[VG_GEN_ARGS];/* buffers: bytes the call had (> arg_len: truncated) */
	__u16 ret_off;  /* VG_GENF_RET_STR: the return value's string in the tail */
	__u16 ret_len;
	__u32 func;     /* VG_HOOKF_LIST: which function of the list (cookie or syscall id) */
	__u16 kstack_off; /* VG_GENF_KSTACK: kernel return addresses (u64) in the tail */
	__u16 kstack_len; /* bytes */
	__u16 ustack_off; /* VG_GENF_USTACK: user return addresses (u64) in the tail */
	__u16 ustack_len;
	__u16 ima_off;    /* VG_GENF_IMA: struct vg_ima_rec in the tail */
	__u16 ima_len;
	__u8 ret_action;  /* return hooks: the enum vg_action of the selector's
			   * matchReturnActions (0: it has none) */
	__u8 pad_ract[3];
};

enum vg_gen_flag {
	VG_GENF_RETURN = 0x1,     /* ret is set */
	VG_GENF_MONITOR = 0x2,    /* an enforcement action was only reported (monitor mode) */
	VG_GENF_RET_STR = 0x4,    /* the return value is a string at ret_off (ret: the pointer) */
	VG_GENF_KSTACK = 0x8,     /* kstack_off / kstack_len are set */
	VG_GENF_USTACK = 0x10,    /* ustack_off / ustack_len are set */
	VG_GENF_SOCK_OWNER = 0x20,/* pid / tid are the tracked owner of a sock argument */
	VG_GENF_IMA = 0x40,       /* ima_off / ima_len are set */
	VG_GENF_CHUNKS = 0x80,    /* VG_MSG_DATA records with the rest of a maxData buffer
				   * were sent just before this record */
};

/*
 * VG_MSG_DATA: bytes of a maxData buffer argument beyond the generic record's first
 * VG_GEN_STR_MAX, sent before that record, one record per chunk; user space puts them
 * back in order (by off) when the record (same tid, hook and hdr.ktime) arrives.
 */
enum vg_data_limits {
	VG_DATA_CHUNK = 4096,      /* bytes per VG_MSG_DATA record */
	VG_MAX_DATA = 327360,      /* maxData: bytes of one buffer at most (Tetragon's) */
	VG_DATA_CHUNKS = 80,       /* chunks of one buffer: VG_MAX_DATA / VG_DATA_CHUNK, up */
};

struct vg_data_msg {
	struct vg_msg_hdr hdr;     /* op VG_MSG_DATA; ktime: the generic record's */
	__u32 tid;
	__u32 hook_id;
	__u32 off;                 /* where these bytes go in the argument */
	__u16 len;                 /* bytes that follow */
	__u8 arg;                  /* the argument's index */
	__u8 pad;
};

/* ---- kernel object records (in the generic record's tail) ---------------------------- */

struct vg_sock_rec {
	__u16 family;
	__u16 type;
	__u16 protocol;
	__u8 state;
	__u8 pad;
	__u32 mark;
	__u32 priority;
	__u16 sport;      /* host order */
	__u16 dport;
	__u32 pad2;
	__u8 saddr[16];   /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u64 cookie;
};

struct vg_skb_rec {
	__u32 hash;
	__u32 len;
	__u32 priority;
	__u32 mark;
	__u16 family;
	__u16 protocol;   /* L4: IPPROTO_* */
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct vg_bpf_rec {
	__u32 type;        /* prog or map type */
	__u32 insn_cnt;    /* programs */
	__u32 key_size;    /* maps */
	__u32 value_size;
	__u32 max_entries;
	__u32 pad;
	char name[16];
};

struct vg_userns_rec {
	__u32 level;
	__u32 uid;         /* owner */
	__u32 gid;         /* group */
	__u32 inum;
};

enum vg_perf_limits {
	VG_KSYM_NAME = 128, /* kprobe_func bytes kept (KSYM_NAME_LEN, as Tetragon) */
};

struct vg_perf_rec {
	__u32 type;        /* attr.type (PERF_TYPE_*) */
	__u32 pad;
	__u64 config;
	__u64 probe_offset;
	char kprobe_func[VG_KSYM_NAME]; /* attr.kprobe_func, for kprobe PMU events */
};

struct vg_module_rec {
	__u32 sig_ok;      /* load_info: 1 signature ok, 0 not; 0xffffffff: unknown */
	__u32 pad;
	__u64 taints;
	char name[56];
};

/* matchBinaries, matchParentBinaries: each process's binary, kept by the base sensor
 * (map vg_procs). */
enum vg_proc_flag {
	VG_PROCF_CAPS = 0x1, /* caps[] hold the capabilities the process had at exec */
	VG_PROCF_NS = 0x2,   /* ns holds the namespaces the process had at exec or fork */
};

/* (and matchCapabilityChanges: the capabilities at exec, inherited by fork children,
 * moved to the current ones each time a change filter matched, as Tetragon does;
 * matchNamespaceChanges: the namespaces at exec, a fork child's own at fork, moved to
 * the current ones each time a change filter matched, as Tetragon does) */
struct vg_proc {
	__u32 bin_len;
	__u32 flags;          /* enum vg_proc_flag */
	__u64 caps[3];        /* effective, inheritable, permitted (vg_cap_match.set order) */
	struct vg_namespaces ns; /* inums, 0: not known (a change filter ignores it) */
	char bin[VG_BIN_MAX];
};

/* ---- cgroup socket enforcement (sockguard.bpf.c; vigil.policy.compile_lsm) ---------- */

enum vg_sock_limits {
	VG_SOCK_SELECTORS = 5, /* selectors per hook */
	VG_SOCK_MATCH = 5,     /* matchArgs per selector */
	VG_SOCK_VALUES = 4,    /* inline values per matchArg */
};

/* What a matchArg compares, from the cgroup program's view of the call. */
enum vg_sock_field {
	VG_SKF_ADDR = 1,      /* the call's address (connect/sendmsg: destination; bind: local) */
	VG_SKF_PORT = 2,      /* its port; values are ranges min << 16 | max */
	VG_SKF_PORT_PRIV = 3, /* compiled into VG_SKF_PORT 0:1023 */
	VG_SKF_FAMILY = 4,    /* AF_INET / AF_INET6 (v4-mapped IPv6 counts as AF_INET) */
	VG_SKF_PROTOCOL = 5,  /* IPPROTO_* of the socket */
};

struct vg_sock_match {
	__u8 field;     /* enum vg_sock_field */
	__u8 negate;    /* NotDAddr, NotDPort, ... */
	__u8 nvals;
	__u8 pad;
	__u32 set;      /* VG_SKF_ADDR: address set id in vg_sk_addr */
	__u32 vals[VG_SOCK_VALUES];
};

struct vg_sock_sel {
	__u8 nmatch;
	__u8 bin_op;    /* VG_OP_NONE, IN, NOTIN, PREFIX, NOTPREFIX */
	__u8 action;    /* enum vg_action of the record: POST or OVERRIDE */
	__u8 post;      /* 0: NoPost */
	__s32 err;      /* Override: the negative errno the call fails with; 0: allow */
	__u32 bin_set;  /* matchBinaries string set */
	__u32 pad;
	struct vg_sock_match m[VG_SOCK_MATCH];
};

/* One security_socket_* hook of one policy: .rodata.sock of one copy of sockguard.bpf.o. */
struct vg_sock_cfg {
	__u32 hook_id;      /* echoed in records (vg_generic_msg, op VG_MSG_GENERIC_KPROBE) */
	__u8 nsel;          /* 0: post every call */
	__u8 monitor;       /* policy mode monitor: report, never refuse */
	__u8 has_sockaddr;  /* put the sockaddr (vg_read_sockaddr layout) in the record */
	__u8 pad;
	struct vg_sock_sel sel[VG_SOCK_SELECTORS];
};

/* ---- keys of the selector value maps (written by vigil.policy's compilers) --------- */

/* String equality sets (vg_str_eq, vg_sk_bin_eq): set id, length, the string. */
struct vg_eq_key {
	__u32 set;
	__u32 len;
	char s[VG_STR_KEY];
};

/* Prefix/postfix tries (vg_str_pfx, vg_str_sfx reversed, vg_sk_bin_pfx):
 * prefixlen = 32 (set) + 8 * string bytes. */
struct vg_pfx_key {
	__u32 prefixlen;
	__u32 set;
	char s[VG_PFX_KEY];
};

/* SubString sets (vg_str_sub, walked whole by bpf_for_each_map_elem): set id, the
 * NUL-terminated value. */
struct vg_sub_key {
	__u32 set;
	char s[VG_SUB_KEY];
};

/* InMap integer sets (vg_int_set). */
struct vg_int_key {
	__u32 set;
	__u32 pad;
	__s64 v;
};

/* Address tries (vg_addr_lpm, vg_sk_addr): prefixlen = 32 (set) + 32 (family) + address
 * bits; addr is the network-order address, IPv4 in the first 4 bytes. */
struct vg_addr_key {
	__u32 prefixlen;
	__u32 set;
	__u32 family;
	__u8 addr[16];
};

/* ---- pod scoping of tracing policies (policyfilter.bpf.h; vigil.sensors.policyfilter) -
 * A policy with a namespace, podSelector or containerSelector runs its hooks only for
 * tasks whose cgroup is listed for it in vg_pf_cgroups (one map shared by every hook);
 * user space keeps the map in step with the pods that match.
 */
enum vg_pf_limits {
	VG_PF_ENTRIES = 65536,  /* (cgroup, policy) pairs across every scoped policy */
};

struct vg_pf_key {
	__u64 cgroup_id;  /* kernfs id of the cgroup (v2, or the v1 tracking hierarchy's) */
	__u32 policy_id;  /* vg_pf_cfg.policy_id of the policy instance */
	__u32 pad;
};

/* .rodata.pf of one hook's generic.bpf.o copy; zero: not scoped (every task). */
struct vg_pf_cfg {
	__u32 policy_id;
	__s32 subsys;     /* cgroup v1 subsystem index whose hierarchy identifies pods;
			   * -1: the cgroup v2 (default) hierarchy */
	/* matchWorkloads: selector si matches only tasks whose cgroup is listed under
	 * sel_ids[si] in vg_pf_cgroups (its own filter id); 0: no workload filter */
	__u32 sel_ids[VG_GEN_SELECTORS];
	/* hostSelector {}: host processes (tasks in no pod's cgroup) pass too. Bit si of
	 * host_mask for selector si's matchWorkloads, bit VG_GEN_SELECTORS for the policy's
	 * spec.hostSelector; host_id is the filter id listing every pod's cgroups. */
	__u32 host_id;
	__u32 host_mask;
};

#endif /* VIGIL_ABI_H */
