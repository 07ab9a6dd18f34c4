// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * generic.bpf.c - one hook of one tracing policy. The loader opens a fresh copy of this
 * object per hook, writes the hook's whole configuration (struct vg_hook_cfg) into
 * .rodata.hook, autoloads the one entry program the hook needs and shares the base
 * sensor's maps by fd. The configuration is read-only and known at load time, so the
 * verifier prunes every branch the hook does not use: a hook pays only for its own
 * arguments and selectors.
 *
 * Per call: fetch raw arguments -> read them into the record (strings, buffers, fd
 * paths, sockaddrs) -> evaluate selectors (first match wins) -> actions (Post with
 * optional rate limit, NoPost, Sigkill, Signal). A call no selector matches writes
 * nothing to the ring buffer.
 *
 * Entry programs by mechanism: tracepoints (vg_gen_tp/_tp_ret), raw tracepoints, uprobes,
 * kprobes (vg_gen_kprobe/_kretprb, or the kprobe.multi pair vg_gen_kpm/_kretpm), BTF
 * trampolines (vg_gen_fentry/_fexit), fmod_ret (vg_gen_fmodret: Override on security_*
 * functions) and BPF LSM (vg_gen_lsm: Override denies). Return hooks merge arguments and
 * return value into one record: kretprobes with the raw arguments saved at entry, fexit
 * with both at hand.
 */
#include "vigil/common.bpf.h"
#include <bpf/bpf_endian.h>
#include "vigil/path.bpf.h"
#include "vigil/procs.bpf.h"
#include "vigil/task.bpf.h"
#include "vigil/policyfilter.bpf.h"

const volatile struct vg_hook_cfg vg_hook SEC(".rodata.hook") = {};

struct vg_gen_buf {
	struct vg_generic_msg msg;
	char data[VG_GEN_DATA_MAX];
	char path[VG_PATH_REGION];
	struct {
		__u32 set;
		__u32 len;
		char s[VG_STR_KEY];
	} eq;
	struct {
		__u32 prefixlen;
		__u32 set;
		char s[VG_PFX_KEY];
	} pfx;
	char tmp[VG_PFX_KEY];
	/* the thread an enforced Override matched for (0: none): the uprobe override program
	 * skips the function only when it is its own thread's decision */
	__u32 overridden;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_gen_buf);
} vg_gen_heap SEC(".maps");

/* maxData: one VG_MSG_DATA record at a time */
struct vg_chunk_buf {
	struct vg_data_msg msg;
	char data[VG_DATA_CHUNK];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_chunk_buf);
} vg_gen_chunk SEC(".maps");

/* Matching values, private to this hook (sizes set by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct vg_eq_key);
	__type(value, __u8);
} vg_str_eq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vg_pfx_key);
	__type(value, __u8);
} vg_str_pfx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vg_pfx_key);
	__type(value, __u8);
} vg_str_sfx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct vg_int_key);
	__type(value, __u8);
} vg_int_set SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vg_addr_key);
	__type(value, __u8);
} vg_addr_lpm SEC(".maps");

#ifdef VG_GEN_SUBSTR
/*
 * SubString (and, with VG_GEN_SUBSTR 2, SubStringIgnCase): only the objects built from
 * generic_substr*.bpf.c call these kernel functions, so every other object loads on
 * kernels without them. The values of all SubString filters of the hook, by set id.
 */
extern int bpf_strnstr(const char *s1__ign, const char *s2__ign, size_t len) __ksym;
#if VG_GEN_SUBSTR > 1
extern int bpf_strncasestr(const char *s1__ign, const char *s2__ign, size_t len) __ksym;
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct vg_sub_key);
	__type(value, __u8);
} vg_str_sub SEC(".maps");
#endif

/* Raw arguments saved at syscall entry for the exit program (return hooks). */
struct vg_gen_entry {
	__u64 raw[VG_GEN_ARGS];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, __u64);
	__type(value, struct vg_gen_entry);
} vg_gen_entries SEC(".maps");

/* Post with rateLimit: last time a (selector, scope, args) tuple was posted. */
struct vg_rate_key {
	__u32 selector;
	__u32 scope_id;
	__u64 hash;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1);
	__type(key, struct vg_rate_key);
	__type(value, __u64);
} vg_gen_rate SEC(".maps");

/*
 * followChildren / followForks: tgid -> bit si set when the process descends from a
 * process selector si matched (its binary at an exec, or one of its pids). Maintained by
 * vg_gen_fl_exec/_fork/_exit, attached only when a selector follows; seeded by user space
 * from /proc at load. A plain hash, not an LRU: an LRU would silently forget a followed
 * process, a full map refuses the new entry and counts it (VG_DROP_FOLLOW_FULL).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} vg_follow SEC(".maps");

/* Action counters of this hook (ListTracingPolicies' stats). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_gen_counts);
} vg_gen_counts SEC(".maps");

/* This hook's policy mode, live: user space writes it at load and on every
 * ConfigureTracingPolicy mode change (one update, no reload). Read once per match. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_hook_mode);
} vg_gen_mode SEC(".maps");

static __always_inline int vg_monitor(void)
{
	__u32 zero = 0;
	struct vg_hook_mode *m = bpf_map_lookup_elem(&vg_gen_mode, &zero);

	return m && m->monitor;
}

VG_DEFINE_PATH_WALK(vg_gen_path, vg_gen_heap, struct vg_gen_buf, path)

#define CFG vg_hook

/* ---- reading arguments ------------------------------------------------------------ */

static __always_inline __s64 vg_int_value(__u64 raw, __u8 size, __u8 flags)
{
	int is_signed = flags & VG_ARGF_SIGNED;

	switch (size) {
	case 1:
		return is_signed ? (__s64)(__s8)raw : (__s64)(__u8)raw;
	case 2:
		return is_signed ? (__s64)(__s16)raw : (__s64)(__u16)raw;
	case 4:
		return is_signed ? (__s64)(__s32)raw : (__s64)(__u32)raw;
	default:
		return (__s64)raw;
	}
}

/* Copy the resolved path of `p` (a copy on the stack) to data[off]. Returns the bytes. */
static __always_inline __u32 vg_read_kpath(struct vg_gen_buf *h, __u32 off, struct path *p,
					   __u32 *orig)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	struct path root = {};
	__u32 pos, len, trunc = 0;

	if (!p->dentry)
		return 0;
	bpf_probe_read_kernel(&root, sizeof(root), &fs->root);
	pos = vg_gen_path(p, &root, &trunc);
	if (pos >= VG_PATH_MAX) { /* the root itself */
		h->data[off & VG_GEN_OFF_MASK] = '/';
		*orig = 1;
		return 1;
	}
	len = VG_PATH_MAX - pos;
	*orig = len;
	if (bpf_probe_read_kernel(&h->data[off & VG_GEN_OFF_MASK], len & (VG_PATH_MAX - 1),
				  &h->path[pos & (VG_PATH_MAX - 1)]))
		return 0;
	return len & (VG_PATH_MAX - 1);
}

/* fd of the current task -> its path, copied to data[off]. Returns the bytes written. */
static __always_inline __u32 vg_read_fd(struct vg_gen_buf *h, __u32 off, __s64 fd, __u32 *orig)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct files_struct *files = BPF_CORE_READ(task, files);
	struct fdtable *fdt = BPF_CORE_READ(files, fdt);
	unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	struct path fpath = {};

	if (fd < 0 || fd >= max_fds)
		return 0;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xfffff]);
	if (!file)
		return 0;
	BPF_CORE_READ_INTO(&fpath, file, f_path);
	return vg_read_kpath(h, off, &fpath, orig);
}

/* struct file * -> its path. */
static __always_inline __u32 vg_read_file(struct vg_gen_buf *h, __u32 off, struct file *file,
					  __u32 *orig)
{
	struct path fpath = {};

	if (!file)
		return 0;
	BPF_CORE_READ_INTO(&fpath, file, f_path);
	return vg_read_kpath(h, off, &fpath, orig);
}

/* Normalised sockaddr in the record: u16 family, u16 port (host order), u8 addr[16]. */
static __always_inline __u32 vg_read_sockaddr(struct vg_gen_buf *h, __u32 off, __u64 uptr,
					       int kernel)
{
	struct sockaddr_in6 sa = {};
	__u8 *out = (__u8 *)&h->data[off & VG_GEN_OFF_MASK];
	__u16 family;

	if (kernel) {
		if (bpf_probe_read_kernel(&sa, sizeof(sa), (void *)uptr) &&
		    bpf_probe_read_kernel(&sa, sizeof(struct sockaddr_in), (void *)uptr))
			return 0;
	} else if (bpf_probe_read_user(&sa, sizeof(sa), (void *)uptr)) {
		if (bpf_probe_read_user(&sa, sizeof(struct sockaddr_in), (void *)uptr))
			return 0;
	}
	family = sa.sin6_family;
	__builtin_memset(out, 0, 20);
	*(__u16 *)out = family;
	/* only inet families have a port and an address; elsewhere (AF_UNIX: the path) those
	 * bytes are something else and stay zero */
	if (family == 2 /* AF_INET */) {
		*(__u16 *)(out + 2) = bpf_ntohs(sa.sin6_port);
		__builtin_memcpy(out + 4, &((struct sockaddr_in *)&sa)->sin_addr, 4);
	} else if (family == 10 /* AF_INET6 */) {
		*(__u16 *)(out + 2) = bpf_ntohs(sa.sin6_port);
		__builtin_memcpy(out + 4, &sa.sin6_addr, 16);
	}
	return 20;
}

/* ---- kernel objects ------------------------------------------------------------------ */

#define VG_AF_INET 2
#define VG_IFNAMSIZ 16
#define VG_AF_INET6 10

static __always_inline __u32 vg_read_sock(struct vg_gen_buf *h, __u32 off, __u64 v, __u8 flags)
{
	struct vg_sock_rec *r = (struct vg_sock_rec *)&h->data[off & VG_GEN_OFF_MASK];
	struct sock *sk = (struct sock *)v;

	if (flags & VG_ARGF_SOCKET)
		sk = BPF_CORE_READ((struct socket *)v, sk);
	if (!sk)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	r->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->type = BPF_CORE_READ(sk, sk_type);
	r->protocol = BPF_CORE_READ(sk, sk_protocol);
	r->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	r->mark = BPF_CORE_READ(sk, sk_mark);
	r->priority = BPF_CORE_READ(sk, sk_priority);
	r->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	r->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (r->family == VG_AF_INET) {
		bpf_core_read(r->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(r->daddr, 4, &sk->__sk_common.skc_daddr);
	} else if (r->family == VG_AF_INET6) {
		bpf_core_read(r->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(r->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
	return sizeof(*r);
}

static __always_inline __u32 vg_read_skb(struct vg_gen_buf *h, __u32 off, __u64 v)
{
	struct vg_skb_rec *r = (struct vg_skb_rec *)&h->data[off & VG_GEN_OFF_MASK];
	struct sk_buff *skb = (struct sk_buff *)v;
	unsigned char *head;
	__u16 nh, th;
	__u8 ver = 0;

	if (!skb)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	r->hash = BPF_CORE_READ(skb, hash);
	r->len = BPF_CORE_READ(skb, len);
	r->priority = BPF_CORE_READ(skb, priority);
	r->mark = BPF_CORE_READ(skb, mark);
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	th = BPF_CORE_READ(skb, transport_header);
	bpf_probe_read_kernel(&ver, 1, head + nh);
	ver >>= 4;
	if (ver == 4) {
		struct iphdr ip = {};

		bpf_probe_read_kernel(&ip, sizeof(ip), head + nh);
		r->family = VG_AF_INET;
		r->protocol = ip.protocol;
		__builtin_memcpy(r->saddr, &ip.saddr, 4);
		__builtin_memcpy(r->daddr, &ip.daddr, 4);
		if (th == nh) /* transport header not set yet: right after the IP header */
			th = nh + ip.ihl * 4;
	} else if (ver == 6) {
		struct ipv6hdr ip6 = {};

		bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh);
		r->family = VG_AF_INET6;
		r->protocol = ip6.nexthdr;
		__builtin_memcpy(r->saddr, &ip6.saddr, 16);
		__builtin_memcpy(r->daddr, &ip6.daddr, 16);
		if (th == nh)
			th = nh + sizeof(ip6);
	} else {
		return sizeof(*r);
	}
	if ((r->protocol == 6 || r->protocol == 17) && th != 0xffff) { /* TCP, UDP */
		__u16 ports[2] = {};

		bpf_probe_read_kernel(ports, sizeof(ports), head + th);
		r->sport = bpf_ntohs(ports[0]);
		r->dport = bpf_ntohs(ports[1]);
	}
	return sizeof(*r);
}

static __always_inline __u32 vg_read_cred(struct vg_gen_buf *h, __u32 off, __u64 v)
{
	struct vg_creds *c = (struct vg_creds *)&h->data[off & VG_GEN_OFF_MASK];
	struct cred *cred = (struct cred *)v;
	struct user_namespace *ns;

	if (!cred)
		return 0;
	__builtin_memset(c, 0, sizeof(*c));
	c->uid = BPF_CORE_READ(cred, uid.val);
	c->gid = BPF_CORE_READ(cred, gid.val);
	c->euid = BPF_CORE_READ(cred, euid.val);
	c->egid = BPF_CORE_READ(cred, egid.val);
	c->suid = BPF_CORE_READ(cred, suid.val);
	c->sgid = BPF_CORE_READ(cred, sgid.val);
	c->fsuid = BPF_CORE_READ(cred, fsuid.val);
	c->fsgid = BPF_CORE_READ(cred, fsgid.val);
	c->securebits = BPF_CORE_READ(cred, securebits);
	/* kernel_cap_t is u32[2] before 6.3 and a u64 after: 8 bytes either way */
	bpf_probe_read_kernel(&c->cap_permitted, 8, &cred->cap_permitted);
	bpf_probe_read_kernel(&c->cap_effective, 8, &cred->cap_effective);
	bpf_probe_read_kernel(&c->cap_inheritable, 8, &cred->cap_inheritable);
	ns = BPF_CORE_READ(cred, user_ns);
	if (ns) {
		c->user_ns_level = BPF_CORE_READ(ns, level);
		c->user_ns_uid = BPF_CORE_READ(ns, owner.val);
		c->user_ns_gid = BPF_CORE_READ(ns, group.val);
		c->user_ns_inum = BPF_CORE_READ(ns, ns.inum);
	}
	return sizeof(*c);
}

/* the subset of kernel/module/internal.h's struct load_info Vigil reads (CO-RE) */
struct load_info {
	const char *name;
	struct module *mod;
	bool sig_ok;
} __attribute__((preserve_access_index));

static __always_inline __u32 vg_read_bpf_obj(struct vg_gen_buf *h, __u32 off, __u64 v, __u8 kind)
{
	struct vg_bpf_rec *r = (struct vg_bpf_rec *)&h->data[off & VG_GEN_OFF_MASK];

	if (!v)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	if (kind == VG_ARG_BPF_ATTR) {
		union bpf_attr *a = (union bpf_attr *)v;

		r->type = BPF_CORE_READ(a, prog_type);
		r->insn_cnt = BPF_CORE_READ(a, insn_cnt);
		BPF_CORE_READ_INTO(&r->name, a, prog_name);
	} else if (kind == VG_ARG_BPF_PROG) {
		struct bpf_prog *p = (struct bpf_prog *)v;

		r->type = BPF_CORE_READ(p, type);
		r->insn_cnt = BPF_CORE_READ(p, len);
		BPF_CORE_READ_INTO(&r->name, p, aux, name);
	} else {
		struct bpf_map *m = (struct bpf_map *)v;

		r->type = BPF_CORE_READ(m, map_type);
		r->key_size = BPF_CORE_READ(m, key_size);
		r->value_size = BPF_CORE_READ(m, value_size);
		r->max_entries = BPF_CORE_READ(m, max_entries);
		BPF_CORE_READ_INTO(&r->name, m, name);
	}
	return sizeof(*r);
}

static __always_inline __u32 vg_read_module(struct vg_gen_buf *h, __u32 off, __u64 v, __u8 kind)
{
	struct vg_module_rec *r = (struct vg_module_rec *)&h->data[off & VG_GEN_OFF_MASK];
	struct module *mod = (struct module *)v;

	if (!v)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	r->sig_ok = 0xffffffff;
	if (kind == VG_ARG_LOAD_INFO) {
		struct load_info *info = (struct load_info *)v;
		const char *name = BPF_CORE_READ(info, name);

		if (bpf_core_field_exists(info->sig_ok))
			r->sig_ok = BPF_CORE_READ(info, sig_ok);
		mod = BPF_CORE_READ(info, mod);
		if (name) {
			bpf_probe_read_kernel_str(r->name, sizeof(r->name), name);
			return sizeof(*r);
		}
		if (!mod)
			return sizeof(*r);
	}
	BPF_CORE_READ_INTO(&r->name, mod, name);
	r->taints = BPF_CORE_READ(mod, taints);
	return sizeof(*r);
}

static __always_inline __u32 vg_read_userns(struct vg_gen_buf *h, __u32 off, __u64 v)
{
	struct vg_userns_rec *r = (struct vg_userns_rec *)&h->data[off & VG_GEN_OFF_MASK];
	struct user_namespace *ns = (struct user_namespace *)v;

	if (!ns)
		return 0;
	r->level = BPF_CORE_READ(ns, level);
	r->uid = BPF_CORE_READ(ns, owner.val);
	r->gid = BPF_CORE_READ(ns, group.val);
	r->inum = BPF_CORE_READ(ns, ns.inum);
	return sizeof(*r);
}

static __always_inline __u32 vg_read_perf_event(struct vg_gen_buf *h, __u32 off, __u64 v)
{
	struct vg_perf_rec *r = (struct vg_perf_rec *)&h->data[off & VG_GEN_OFF_MASK];
	struct perf_event *ev = (struct perf_event *)v;
	__u64 func = 0;

	if (!ev)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));
	r->type = BPF_CORE_READ(ev, attr.type);
	r->config = BPF_CORE_READ(ev, attr.config);
	r->probe_offset = BPF_CORE_READ(ev, attr.probe_offset);
	/* kprobe PMU events: attr.kprobe_func points to the function's name (the perf_event_open
	 * caller's memory while the event is set up) */
	func = BPF_CORE_READ(ev, attr.kprobe_func);
	if (func && bpf_probe_read_kernel_str(r->kprobe_func, sizeof(r->kprobe_func),
					      (void *)func) <= 0)
		bpf_probe_read_user_str(r->kprobe_func, sizeof(r->kprobe_func), (void *)func);
	return sizeof(*r);
}

/* iov_iter before 6.4 named its iovec array `iov` (now `__iov`) */
struct iov_iter___iov {
	const struct iovec *iov;
} __attribute__((preserve_access_index));

/* A struct iov_iter: the address of the bytes it describes (a user buffer, the first
 * iovec or kvec; 0 for other kinds) and their count. */
static __always_inline __u64 vg_iter_base(__u64 v, __u64 *count)
{
	struct iov_iter *it = (struct iov_iter *)v;
	const struct iovec *iov = NULL;
	__u8 type;
	__u64 len;

	if (!it)
		return 0;
	type = BPF_CORE_READ(it, iter_type);
	*count = BPF_CORE_READ(it, count);
	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF))
		return (__u64)BPF_CORE_READ(it, ubuf);
	if (type == bpf_core_enum_value(enum iter_type, ITER_IOVEC)) {
		if (bpf_core_field_exists(it->__iov))
			iov = BPF_CORE_READ(it, __iov);
		else
			iov = BPF_CORE_READ((struct iov_iter___iov *)it, iov);
	} else if (type == bpf_core_enum_value(enum iter_type, ITER_KVEC)) {
		iov = (const struct iovec *)BPF_CORE_READ(it, kvec);
	}
	if (!iov)
		return 0;
	len = BPF_CORE_READ(iov, iov_len);
	if (len < *count)
		*count = len;
	return (__u64)BPF_CORE_READ(iov, iov_base);
}

/* char_iovec: the bytes of the first VG_GEN_IOVECS entries of the iovec array at v (the
 * number of entries in arg size_arg), one after the other, up to max_len bytes; with
 * returnCopy, at most the return value's bytes in all (what the call transferred).
 * orig_len: the bytes the entries read hold. */
static __always_inline __u32 vg_read_iovec(struct vg_gen_buf *h, __u32 off, int i, __u64 v,
					   __u64 *raw, __s64 ret, __u32 *orig)
{
	__u8 sa = CFG.args[i].size_arg;
	__u64 cnt = sa < VG_GEN_ARGS ? raw[sa & 7] : 0, total = 0, left = ~0ULL;
	__u32 n = 0, max = CFG.args[i].max_len;

	if (CFG.args[i].flags & VG_ARGF_RETURN_COPY)
		left = ret > 0 ? ret : 0;
	if (max > VG_GEN_STR_MAX)
		max = VG_GEN_STR_MAX;
	for (int k = 0; k < VG_GEN_IOVECS; k++) {
		struct iovec iov = {};
		__u64 len, cp;

		if (k >= cnt || !left)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(v + k * sizeof(iov))) &&
		    bpf_probe_read_kernel(&iov, sizeof(iov), (void *)(v + k * sizeof(iov))))
			break;
		len = iov.iov_len < left ? iov.iov_len : left;
		left -= len;
		total += len;
		cp = len;
		if (cp > max - n)
			cp = max - n;
		if (cp > VG_GEN_STR_MAX)
			cp = VG_GEN_STR_MAX;
		if (cp && bpf_probe_read_user(&h->data[(off + n) & VG_GEN_OFF_MASK], cp, iov.iov_base) &&
		    bpf_probe_read_kernel(&h->data[(off + n) & VG_GEN_OFF_MASK], cp, iov.iov_base))
			break;
		n += cp;
	}
	*orig = total;
	return n;
}

/*
 * sockaddr_un in the record: u16 family, then, for AF_UNIX, the path up to its NUL; an
 * abstract name (sun_path[0] == 0) is '@' and the name up to the next NUL, as Tetragon
 * shows it. Other families: the family only.
 */
static __always_inline __u32 vg_read_sockaddr_un(struct vg_gen_buf *h, __u32 off, __u64 ptr,
						 int kernel, __u32 *orig)
{
	__u8 *out = (__u8 *)&h->data[off & VG_GEN_OFF_MASK];
	__u32 n = VG_UNIX_PATH_MAX;
	long r;

	if (kernel)
		r = bpf_probe_read_kernel(out, 2 + VG_UNIX_PATH_MAX, (void *)ptr);
	else
		r = bpf_probe_read_user(out, 2 + VG_UNIX_PATH_MAX, (void *)ptr);
	if (r) { /* the struct may end early (a shorter address at a page's end) */
		if (kernel)
			r = bpf_probe_read_kernel(out, 2, (void *)ptr);
		else
			r = bpf_probe_read_user(out, 2, (void *)ptr);
		return r ? 0 : 2;
	}
	if (*(__u16 *)out != 1 /* AF_UNIX */)
		return 2;
	if (out[2] == 0)
		out[2] = '@';
	for (__u32 k = 1; k < VG_UNIX_PATH_MAX; k++) {
		if (out[2 + k] == 0) {
			n = k;
			break;
		}
	}
	*orig = n;
	return 2 + n;
}

/* Read argument i from its raw value into the record at `off`. Returns bytes written. */
static __always_inline __u32 vg_read_arg(void *ctx, struct vg_gen_buf *h, int i, __u64 *raw,
					 __u32 off, __s64 ret)
{
	struct vg_generic_msg *m = &h->msg;
	__u32 n = 0, max = CFG.args[i].max_len;
	__u64 v = raw[i];
	long r;

	if (max > VG_GEN_STR_MAX)
		max = VG_GEN_STR_MAX;
	switch (CFG.args[i].kind) {
	case VG_ARG_INT: {
		__s64 val = vg_int_value(v, CFG.args[i].size, CFG.args[i].flags);

		__builtin_memcpy(&h->data[off & VG_GEN_OFF_MASK], &val, 8);
		return 8;
	}
	case VG_ARG_USTR:
	case VG_ARG_KSTR:
		if (CFG.args[i].kind == VG_ARG_USTR)
			r = bpf_probe_read_user_str(&h->data[off & VG_GEN_OFF_MASK], max, (void *)v);
		else /* kernel functions may also take __user strings */
			r = bpf_probe_read_kernel_str(&h->data[off & VG_GEN_OFF_MASK], max, (void *)v);
		if (r <= 0 && CFG.args[i].kind == VG_ARG_KSTR)
			r = bpf_probe_read_user_str(&h->data[off & VG_GEN_OFF_MASK], max, (void *)v);
		if (r <= 0)
			return 0;
		m->orig_len[i] = r - 1;
		return (r - 1) & (VG_GEN_STR_MAX - 1);
	case VG_ARG_UBUF: {
		__u8 sa = CFG.args[i].size_arg;
		__s64 len = 0;

		if (CFG.args[i].flags & VG_ARGF_RETURN_COPY)
			len = ret;
		else if (sa < VG_GEN_ARGS)
			len = (__s64)raw[sa & 7];
		if (len <= 0)
			return 0;
		m->orig_len[i] = len;
		if (len > max)
			len = max;
		if (len > VG_GEN_STR_MAX)
			len = VG_GEN_STR_MAX;
		if (bpf_probe_read_user(&h->data[off & VG_GEN_OFF_MASK], len, (void *)v))
			return 0;
		return len;
	}
	case VG_ARG_KBUF: {
		__u8 sa = CFG.args[i].size_arg;
		__s64 len = 0;

		if (CFG.args[i].flags & VG_ARGF_RETURN_COPY)
			len = ret;
		else if (sa < VG_GEN_ARGS)
			len = (__s64)raw[sa & 7];
		if (len <= 0)
			return 0;
		m->orig_len[i] = len;
		if (len > max)
			len = max;
		if (len > VG_GEN_STR_MAX)
			len = VG_GEN_STR_MAX;
		if (bpf_probe_read_kernel(&h->data[off & VG_GEN_OFF_MASK], len, (void *)v))
			return 0;
		return len;
	}
	case VG_ARG_IOVEC:
		return vg_read_iovec(h, off, i, v, raw, ret, &m->orig_len[i]);
	case VG_ARG_FD:
		return vg_read_fd(h, off, (__s64)(__s32)v, &m->orig_len[i]);
	case VG_ARG_SOCKADDR:
		return vg_read_sockaddr(h, off, v, 0);
	case VG_ARG_KSOCKADDR:
		return vg_read_sockaddr(h, off, v, 1);
	case VG_ARG_SOCKADDR_UN:
	case VG_ARG_KSOCKADDR_UN:
		return vg_read_sockaddr_un(h, off, v, CFG.args[i].kind == VG_ARG_KSOCKADDR_UN,
					   &m->orig_len[i]);
	case VG_ARG_FILE:
		return vg_read_file(h, off, (struct file *)v, &m->orig_len[i]);
	case VG_ARG_BINPRM:
		return vg_read_file(h, off, BPF_CORE_READ((struct linux_binprm *)v, file),
				    &m->orig_len[i]);
	case VG_ARG_PATH: {
		struct path p = {};

		if (!v || bpf_probe_read_kernel(&p, sizeof(p), (void *)v))
			return 0;
		return vg_read_kpath(h, off, &p, &m->orig_len[i]);
	}
	case VG_ARG_DENTRY: {
		/* no mount: the walk stops at the root of the dentry's filesystem */
		struct path p = {.dentry = (struct dentry *)v};

		return vg_read_kpath(h, off, &p, &m->orig_len[i]);
	}
	case VG_ARG_SOCK:
		return vg_read_sock(h, off, v, CFG.args[i].flags);
	case VG_ARG_SKB:
		return vg_read_skb(h, off, v);
	case VG_ARG_CRED:
		return vg_read_cred(h, off, v);
	case VG_ARG_CAPS: {
		__u64 caps = 0;

		if (bpf_probe_read_kernel(&caps, 8, (void *)v))
			return 0;
		__builtin_memcpy(&h->data[off & VG_GEN_OFF_MASK], &caps, 8);
		return 8;
	}
	case VG_ARG_BPF_ATTR:
	case VG_ARG_BPF_PROG:
	case VG_ARG_BPF_MAP:
		return vg_read_bpf_obj(h, off, v, CFG.args[i].kind);
	case VG_ARG_MODULE:
	case VG_ARG_LOAD_INFO:
		return vg_read_module(h, off, v, CFG.args[i].kind);
	case VG_ARG_IOV_ITER: {
		__u64 count = 0, base = vg_iter_base(v, &count), len = count;

		raw[i & 7] = base; /* maxData chunks continue from here */
		if (!base || !count)
			return 0;
		m->orig_len[i] = count;
		if (len > max)
			len = max;
		if (len > VG_GEN_STR_MAX)
			len = VG_GEN_STR_MAX;
		if (bpf_probe_read_user(&h->data[off & VG_GEN_OFF_MASK], len, (void *)base) &&
		    bpf_probe_read_kernel(&h->data[off & VG_GEN_OFF_MASK], len, (void *)base))
			return 0;
		return len;
	}
	case VG_ARG_NETDEV:
		if (!v)
			return 0;
		r = bpf_probe_read_kernel_str(&h->data[off & VG_GEN_OFF_MASK], VG_IFNAMSIZ,
					      &((struct net_device *)v)->name);
		if (r <= 0)
			return 0;
		m->orig_len[i] = r - 1;
		return (r - 1) & (VG_GEN_STR_MAX - 1);
	case VG_ARG_USER_NS:
		return vg_read_userns(h, off, v);
	case VG_ARG_PERF_EVENT:
		return vg_read_perf_event(h, off, v);
	case VG_ARG_TP_CHARS:
		/* a fixed array inside the record: at most max_len bytes, up to its NUL */
		r = bpf_probe_read_kernel_str(&h->data[off & VG_GEN_OFF_MASK], max,
					      (char *)ctx + CFG.args[i].offset);
		if (r <= 0)
			return 0;
		m->orig_len[i] = r - 1;
		return (r - 1) & (VG_GEN_STR_MAX - 1);
	case VG_ARG_DATA_LOC: {
		/* v is the u32 __data_loc word: length << 16 | offset in the record */
		__u32 loc = (__u32)v, len = loc >> 16;

		if (len > max)
			len = max;
		if (len > VG_GEN_STR_MAX)
			len = VG_GEN_STR_MAX;
		if (bpf_probe_read_kernel(&h->data[off & VG_GEN_OFF_MASK], len,
					  (char *)ctx + (loc & 0xffff)))
			return 0;
		if (len && h->data[(off + len - 1) & VG_GEN_OFF_MASK] == 0)
			len--; /* drop the string's NUL */
		m->orig_len[i] = len;
		return len;
	}
	}
	return n;
}

/* `resolve`: follow a BTF field path from the raw argument (offsets computed in user space). */
/* resolve reads kernel memory, or user memory for a uprobe's btfPath types */
static __always_inline void vg_res_read(int i, __u64 *x, __u32 size, __u64 addr)
{
	if (CFG.args[i].flags & VG_ARGF_RES_USER)
		bpf_probe_read_user(x, size, (void *)addr);
	else
		bpf_probe_read_kernel(x, size, (void *)addr);
}

static __always_inline __u64 vg_resolve(int i, __u64 v)
{
	__u8 n = CFG.args[i].nres;
	__u64 x = 0;

	if (!n)
		return v;
	for (int k = 0; k < VG_RES_STEPS - 1; k++) {
		if (k + 1 < n) {
			x = 0;
			vg_res_read(i, &x, 8, v + CFG.args[i].res_off[k]);
			v = x;
		}
	}
	v += CFG.args[i].res_off[(n - 1) & (VG_RES_STEPS - 1)];
	x = 0;
	if (CFG.args[i].flags & VG_ARGF_RES_DEREF) {
		vg_res_read(i, &x, 8, v);
		v = x;
	} else if (CFG.args[i].flags & VG_ARGF_RES_VALUE) {
		__u8 size = CFG.args[i].size;

		vg_res_read(i, &x, size > 8 || size == 0 ? 8 : size, v);
		v = x;
	}
	return v;
}

/* ---- matching ----------------------------------------------------------------------- */

static __always_inline int vg_int_match(const volatile struct vg_match_arg *ma, __s64 v)
{
	int hit = 0;

	switch (ma->op) {
	case VG_OP_EQ:
	case VG_OP_NEQ:
		for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
			if (k < ma->nvals && ma->vals[k] == v)
				hit = 1;
		return ma->op == VG_OP_EQ ? hit : !hit;
	case VG_OP_GT:
		return v > ma->vals[0];
	case VG_OP_LT:
		return v < ma->vals[0];
	case VG_OP_MASK:
		for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
			if (k < ma->nvals && (v & ma->vals[k]))
				hit = 1;
		return hit;
	case VG_OP_INRANGE:
	case VG_OP_NOTINRANGE:
		for (int k = 0; k + 1 < VG_GEN_MATCH_VALUES; k += 2)
			if (k < ma->nvals && v >= ma->vals[k] && v <= ma->vals[k + 1])
				hit = 1;
		return ma->op == VG_OP_INRANGE ? hit : !hit;
	case VG_OP_INMAP:
	case VG_OP_NOTINMAP: {
		struct vg_int_key key = {.set = ma->set, .v = v};

		hit = bpf_map_lookup_elem(&vg_int_set, &key) != NULL;
		return ma->op == VG_OP_INMAP ? hit : !hit;
	}
	}
	return 0;
}

struct vg_rev_ctx {
	__u32 n;
};

static long vg_rev_step(__u32 j, void *data)
{
	struct vg_rev_ctx *c = data;
	struct vg_gen_buf *h;
	__u32 zero = 0;

	__u32 from = c->n - 1 - j;

	if (j >= c->n || j >= VG_PFX_KEY || from >= VG_PFX_KEY)
		return 1;
	h = bpf_map_lookup_elem(&vg_gen_heap, &zero);
	if (!h)
		return 1;
	h->pfx.s[j] = h->tmp[from];
	return 0;
}

#ifdef VG_GEN_SUBSTR
struct vg_sub_ctx {
	__u64 src; /* the string (kernel memory) */
	__u32 len;
	__u32 set;
	__u32 icase;
	__u32 hit;
};

/* One member of vg_str_sub: does it occur in the string? (stops the walk on a hit) */
static long vg_sub_step(void *map, struct vg_sub_key *key, __u8 *val, struct vg_sub_ctx *c)
{
	int at;

	if (key->set != c->set)
		return 0;
#if VG_GEN_SUBSTR > 1
	if (c->icase)
		at = bpf_strncasestr((const char *)c->src, key->s, c->len);
	else
#endif
		at = bpf_strnstr((const char *)c->src, key->s, c->len);
	if (at < 0)
		return 0;
	c->hit = 1;
	return 1;
}
#endif

/* Does the string src[0, len) match `op` against value set `set`? src is kernel memory. */
#define VG_S_IFMT 0170000

/* FileType / NotFileType on a file or path argument (ptr: the struct file * or struct
 * path *): the inode's i_mode & S_IFMT against the values (S_IF* bits). A NULL pointer
 * or an inode that cannot be read matches neither operator. */
static __always_inline int vg_file_type_match(const volatile struct vg_match_arg *ma, __u8 kind,
					      __u64 ptr)
{
	struct inode *inode;
	__u32 mode;
	int hit = 0;

	if (!ptr)
		return 0;
	if (kind == VG_ARG_FILE)
		inode = BPF_CORE_READ((struct file *)ptr, f_inode);
	else
		inode = BPF_CORE_READ((struct path *)ptr, dentry, d_inode);
	if (!inode)
		return 0;
	mode = BPF_CORE_READ(inode, i_mode) & VG_S_IFMT;
	if (!mode)
		return 0;
	for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
		if (k < ma->nvals && ma->vals[k] == mode)
			hit = 1;
	return ma->op == VG_OP_FILETYPE ? hit : !hit;
}

static __always_inline int vg_str_match(struct vg_gen_buf *h, __u8 op, __u32 set, const char *src,
					__u32 len)
{
	int hit = 0;
	__u32 n;

	switch (op) {
	case VG_OP_EQ:
	case VG_OP_NEQ:
	case VG_OP_IN:
	case VG_OP_NOTIN:
		if (len < VG_STR_KEY) {
			barrier_var(len); /* keep the mask below for older verifiers (6.1) */
			__builtin_memset(h->eq.s, 0, sizeof(h->eq.s));
			h->eq.set = set;
			h->eq.len = len;
			if (!bpf_probe_read_kernel(h->eq.s, len & (VG_STR_KEY - 1), src))
				hit = bpf_map_lookup_elem(&vg_str_eq, &h->eq) != NULL;
		}
		return (op == VG_OP_EQ || op == VG_OP_IN) ? hit : !hit;
	case VG_OP_PREFIX:
	case VG_OP_NOTPREFIX:
		/* (VG_PFX_KEY is not a power of two: clamp, never mask) */
		n = len < VG_PFX_KEY ? len : VG_PFX_KEY;
		h->pfx.prefixlen = 32 + 8 * n;
		h->pfx.set = set;
		barrier_var(n); /* keep the clamp below for older verifiers (6.1) */
		if (n > VG_PFX_KEY)
			n = VG_PFX_KEY;
		if (!bpf_probe_read_kernel(h->pfx.s, n, src) || n == 0)
			hit = bpf_map_lookup_elem(&vg_str_pfx, &h->pfx) != NULL;
		return op == VG_OP_PREFIX ? hit : !hit;
	case VG_OP_POSTFIX:
	case VG_OP_NOTPOSTFIX: {
		struct vg_rev_ctx c;

		n = len < VG_PFX_KEY - 1 ? len : VG_PFX_KEY - 1;
		barrier_var(n);
		if (n > VG_PFX_KEY - 1)
			n = VG_PFX_KEY - 1;
		c.n = n;
		/* bounded skip: older verifiers refuse map pointer + unbounded scalar */
		if (bpf_probe_read_kernel(h->tmp, n, src + ((len - n) & (2 * VG_GEN_STR_MAX - 1))))
			return op == VG_OP_NOTPOSTFIX;
		bpf_loop(VG_PFX_KEY, vg_rev_step, &c, 0);
		h->pfx.prefixlen = 32 + 8 * n;
		h->pfx.set = set;
		hit = bpf_map_lookup_elem(&vg_str_sfx, &h->pfx) != NULL;
		return op == VG_OP_POSTFIX ? hit : !hit;
	}
#ifdef VG_GEN_SUBSTR
	case VG_OP_SUBSTRING:
	case VG_OP_SUBSTRING_IGNCASE: {
		/* any value of the set anywhere in src[0, len) */
		struct vg_sub_ctx c = {.src = (__u64)src, .len = len, .set = set,
				       .icase = op == VG_OP_SUBSTRING_IGNCASE};

		bpf_for_each_map_elem(&vg_str_sub, vg_sub_step, &c, 0);
		return c.hit;
	}
#endif
	}
	return 0;
}

static __always_inline int vg_sockaddr_match(const volatile struct vg_match_arg *ma, const __u8 *sa)
{
	__u16 family = *(__u16 *)sa, port = *(__u16 *)(sa + 2);
	struct vg_addr_key key = {};
	int hit = 0;

	switch (ma->op) {
	case VG_OP_SADDR:
	case VG_OP_DADDR:
	case VG_OP_NOTSADDR:
	case VG_OP_NOTDADDR:
		key.prefixlen = 64 + (family == 2 ? 32 : 128);
		key.set = ma->set;
		key.family = family;
		__builtin_memcpy(key.addr, sa + 4, 16);
		hit = bpf_map_lookup_elem(&vg_addr_lpm, &key) != NULL;
		return (ma->op == VG_OP_SADDR || ma->op == VG_OP_DADDR) ? hit : !hit;
	case VG_OP_SPORT:
	case VG_OP_DPORT:
	case VG_OP_NOTSPORT:
	case VG_OP_NOTDPORT:
		/* each value is a range packed as min << 16 | max */
		for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
			if (k < ma->nvals && port >= (ma->vals[k] >> 16) &&
			    port <= (ma->vals[k] & 0xffff))
				hit = 1;
		return (ma->op == VG_OP_SPORT || ma->op == VG_OP_DPORT) ? hit : !hit;
	case VG_OP_FAMILY:
		for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
			if (k < ma->nvals && family == ma->vals[k])
				hit = 1;
		return hit;
	}
	return 0;
}

/* sock / skb records: build the source or destination side as a normalised sockaddr. */
static __always_inline int vg_net_match(const volatile struct vg_match_arg *ma, __u16 family,
					__u8 proto, __u8 state, __u16 sport, __u16 dport,
					const __u8 *saddr, const __u8 *daddr)
{
	__u8 sa[20] = {};
	int hit = 0;

	switch (ma->op) {
	case VG_OP_PROTOCOL:
		for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
			if (k < ma->nvals && proto == ma->vals[k])
				hit = 1;
		return hit;
	case VG_OP_STATE:
		for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
			if (k < ma->nvals && state == ma->vals[k])
				hit = 1;
		return hit;
	case VG_OP_SADDR:
	case VG_OP_NOTSADDR:
	case VG_OP_SPORT:
	case VG_OP_NOTSPORT:
		*(__u16 *)(sa + 2) = sport;
		__builtin_memcpy(sa + 4, saddr, 16);
		break;
	default:
		*(__u16 *)(sa + 2) = dport;
		__builtin_memcpy(sa + 4, daddr, 16);
	}
	*(__u16 *)sa = family;
	return vg_sockaddr_match(ma, sa);
}

/*
 * CelExpr: run program p of CFG.cel over the raw arguments (and the return value: an
 * ARG step with index 0xff, in matchReturnArgs programs). The program is read-only
 * and known at load time, so the verifier walks each instruction with its op known and
 * keeps only the cases it uses; hooks without CelExpr never call this. Kept out of line:
 * one copy, however many selector slots refer to it.
 */
static __noinline int vg_cel_eval(__u64 *raw, __u32 p, __s64 ret)
{
	__s64 st[VG_CEL_STACK] = {};
	__u32 sp = 0; /* values on the stack */

	if (p >= VG_GEN_CEL)
		return 0;
#pragma clang loop unroll(disable)
	for (__u32 k = 0; k < VG_CEL_INSNS; k++) {
		const volatile struct vg_cel_insn *in = &CFG.cel[p].insn[k];
		__u8 op = in->op;
		__s64 a, b;

		if (k >= CFG.cel[p].n)
			break;
		if (op == VG_CEL_ARG || op == VG_CEL_CONST) {
			if (sp >= VG_CEL_STACK)
				return 0;
			if (op == VG_CEL_CONST) {
				a = in->imm;
			} else {
				__u8 i = in->arg;

				if (i == 0xff)
					a = ret;
				else if (i >= VG_GEN_ARGS)
					return 0;
				else
					a = vg_int_value(raw[i], CFG.args[i].size, CFG.args[i].flags);
			}
			st[sp & (VG_CEL_STACK - 1)] = a;
			sp++;
			continue;
		}
		if (sp < 1 || sp > VG_CEL_STACK)
			return 0;
		b = st[(sp - 1) & (VG_CEL_STACK - 1)];
		switch (op) { /* unary */
		case VG_CEL_S32:
			st[(sp - 1) & (VG_CEL_STACK - 1)] = (__s64)(__s32)b;
			continue;
		case VG_CEL_U32:
			st[(sp - 1) & (VG_CEL_STACK - 1)] = (__s64)(__u32)b;
			continue;
		case VG_CEL_NOT:
			st[(sp - 1) & (VG_CEL_STACK - 1)] = !b;
			continue;
		}
		if (sp < 2)
			return 0;
		a = st[(sp - 2) & (VG_CEL_STACK - 1)];
		switch (op) {
		case VG_CEL_ADD: a = (__s64)((__u64)a + (__u64)b); break;
		case VG_CEL_SUB: a = (__s64)((__u64)a - (__u64)b); break;
		case VG_CEL_EQ: a = a == b; break;
		case VG_CEL_NE: a = a != b; break;
		case VG_CEL_LT: a = a < b; break;
		case VG_CEL_LE: a = a <= b; break;
		case VG_CEL_LTU: a = (__u64)a < (__u64)b; break;
		case VG_CEL_LEU: a = (__u64)a <= (__u64)b; break;
		case VG_CEL_AND: a = a && b; break;
		case VG_CEL_OR: a = a || b; break;
		case VG_CEL_SWAP:
			st[(sp - 1) & (VG_CEL_STACK - 1)] = a;
			st[(sp - 2) & (VG_CEL_STACK - 1)] = b;
			continue;
		default:
			return 0;
		}
		sp--;
		st[(sp - 1) & (VG_CEL_STACK - 1)] = a;
	}
	return sp == 1 && st[0] != 0;
}

static __always_inline int vg_arg_match(struct vg_gen_buf *h, const volatile struct vg_match_arg *ma,
					__u64 *raw, __s64 ret)
{
	struct vg_generic_msg *m = &h->msg;
	__u8 a = ma->arg;
	__u32 off, len;

	if (ma->op == VG_OP_CEL)
		return vg_cel_eval(raw, ma->set, ret);
	if (a == 0xff && CFG.ret_kind > VG_ARG_INT) /* a string return value */
		return vg_str_match(h, ma->op, ma->set, &h->data[m->ret_off & VG_GEN_OFF_MASK],
				    m->ret_len);
	if (a == 0xff) /* the return value */
		return vg_int_match(ma, ret);
	if (a >= VG_GEN_ARGS)
		return 0;
	if (ma->op == VG_OP_FILETYPE || ma->op == VG_OP_NOTFILETYPE)
		return vg_file_type_match(ma, CFG.args[a].kind, raw[a]);
	off = m->arg_off[a] & VG_GEN_OFF_MASK;
	len = m->arg_len[a];
	switch (CFG.args[a].kind) {
	case VG_ARG_INT:
		return vg_int_match(ma, vg_int_value(raw[a], CFG.args[a].size, CFG.args[a].flags));
	case VG_ARG_SOCKADDR:
	case VG_ARG_KSOCKADDR:
		if (len < 20)
			return 0;
		return vg_sockaddr_match(ma, (__u8 *)&h->data[off]);
	case VG_ARG_SOCKADDR_UN:
	case VG_ARG_KSOCKADDR_UN:
		/* Family on the family, the string operators on the path */
		if (len < 2)
			return 0;
		if (ma->op == VG_OP_FAMILY)
			return vg_sockaddr_match(ma, (__u8 *)&h->data[off]);
		return vg_str_match(h, ma->op, ma->set, &h->data[(off + 2) & VG_GEN_OFF_MASK],
				    len - 2);
	case VG_ARG_SOCK: {
		struct vg_sock_rec *r = (struct vg_sock_rec *)&h->data[off];

		if (len < sizeof(*r))
			return 0;
		return vg_net_match(ma, r->family, r->protocol, r->state, r->sport, r->dport,
				    r->saddr, r->daddr);
	}
	case VG_ARG_SKB: {
		struct vg_skb_rec *r = (struct vg_skb_rec *)&h->data[off];

		if (len < sizeof(*r))
			return 0;
		return vg_net_match(ma, r->family, r->protocol, 0, r->sport, r->dport,
				    r->saddr, r->daddr);
	}
	case VG_ARG_CAPS:
		return vg_int_match(ma, *(__s64 *)&h->data[off]);
	default:
		return vg_str_match(h, ma->op, ma->set, &h->data[off], len);
	}
}

static __always_inline void vg_count(__u32 what)
{
	__u32 zero = 0;
	struct vg_gen_counts *c = bpf_map_lookup_elem(&vg_gen_counts, &zero);

	if (c)
		c->n[what & (VG_GC_MAX - 1)]++;
}

/* Is the current process followed by selector si (a descendant of one it matched)? */
static __always_inline int vg_followed(__u32 tgid, int bit)
{
	__u32 *bits = bpf_map_lookup_elem(&vg_follow, &tgid);

	return bits && (*bits & (1u << (bit & 31)));
}

/* The vg_follow bit of selector si's k-th matchPIDs filter (followForks). */
static __always_inline int vg_pid_bit(int si, int k)
{
	return VG_FOLLOW_PID_BIT + si * VG_GEN_PIDF + k;
}

/* The vg_follow bit of selector si's matchParentBinaries followChildren. */
static __always_inline int vg_pbin_bit(int si)
{
	return si < 3 ? VG_FOLLOW_PBIN_BIT + si : VG_FOLLOW_PBIN_BIT2 + si - 3;
}

/* matchBinaries followChildren: the process's own binary is in the set, or it descends
 * from a process whose binary was (the bit). The same for In and NotIn (negated). */
static __always_inline int vg_bin_follow_match(struct vg_gen_buf *h,
					       const volatile struct vg_selector_cfg *s,
					       __u32 tgid, int si)
{
	struct vg_proc *p;
	int hit = vg_followed(tgid, si);

	if (!hit) {
		p = bpf_map_lookup_elem(&vg_procs, &tgid);
		if (p)
			hit = vg_str_match(h, VG_OP_IN, s->bin_set, p->bin,
					   p->bin_len & (VG_BIN_MAX - 1));
	}
	return s->bin_op == VG_OP_IN ? hit : !hit;
}

static __always_inline int vg_bin_match(struct vg_gen_buf *h, const volatile struct vg_selector_cfg *s,
					__u32 tgid)
{
	struct vg_proc *p = bpf_map_lookup_elem(&vg_procs, &tgid);

	if (!p) /* unknown process: only a negative filter can match */
		return s->bin_op == VG_OP_NOTIN || s->bin_op == VG_OP_NOTPREFIX ||
		       s->bin_op == VG_OP_NOTPOSTFIX;
	return vg_str_match(h, s->bin_op, s->bin_set, p->bin, p->bin_len & (VG_BIN_MAX - 1));
}

/* matchParentBinaries: vg_bin_match on the binary of the caller's parent process
 * (real_parent: the process that forked it, or the reaper that adopted it), the parent
 * Tetragon reports. A parent without a record matches only a negative filter. With
 * followChildren (In / NotIn), as Tetragon tests the parent's followChildren bits: the
 * parent's binary is in the set, or the parent descends from a process whose was. */
static __always_inline int vg_parent_bin_match(struct vg_gen_buf *h,
					       const volatile struct vg_selector_cfg *s, int si)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 ptgid = BPF_CORE_READ(task, real_parent, tgid);
	struct vg_proc *p = bpf_map_lookup_elem(&vg_procs, &ptgid);

	if (s->follow & VG_FOLLOW_PBIN) {
		int hit = vg_followed(ptgid, vg_pbin_bit(si));

		if (!hit && p)
			hit = vg_str_match(h, VG_OP_IN, s->pbin_set, p->bin,
					   p->bin_len & (VG_BIN_MAX - 1));
		return s->pbin_op == VG_OP_IN ? hit : !hit;
	}
	if (!p)
		return s->pbin_op == VG_OP_NOTIN || s->pbin_op == VG_OP_NOTPREFIX ||
		       s->pbin_op == VG_OP_NOTPOSTFIX;
	return vg_str_match(h, s->pbin_op, s->pbin_set, p->bin, p->bin_len & (VG_BIN_MAX - 1));
}

static __always_inline __u32 vg_ns_inum(struct task_struct *task, __u8 ns)
{
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);

	switch (ns) {
	case 0: return BPF_CORE_READ(nsp, uts_ns, ns.inum);
	case 1: return BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	case 2: return BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	case 3: {
		struct upid upid = vg_task_upid(task);

		return BPF_CORE_READ(upid.ns, ns.inum);
	}
	case 4: return BPF_CORE_READ(nsp, pid_ns_for_children, ns.inum);
	case 5: return BPF_CORE_READ(nsp, net_ns, ns.inum);
	case 6: return bpf_core_field_exists(nsp->time_ns) ? BPF_CORE_READ(nsp, time_ns, ns.inum) : 0;
	case 7: return bpf_core_field_exists(nsp->time_ns) ?
		       BPF_CORE_READ(nsp, time_ns_for_children, ns.inum) : 0;
	case 8: return BPF_CORE_READ(nsp, cgroup_ns, ns.inum);
	case 9: return BPF_CORE_READ(task, real_cred, user_ns, ns.inum);
	}
	return 0;
}

/*
 * The first bytes of a string argument (user or kernel memory) against the heads of the
 * values of a positive Equal / Prefix filter: 0 when no value can match, 1 when one may
 * (or when the bytes cannot be read: the full match decides). A value shorter than the
 * string's head_len bytes makes head_len smaller (set by the compiler), so a string that
 * ends early carries its NUL inside the compared bytes and differs from every head.
 */
static __always_inline int vg_str_head_may_match(const volatile struct vg_match_arg *ma, __u64 ptr)
{
	__u8 kind = CFG.args[ma->arg & 7].kind;
	__u8 n = ma->head_len;
	__u64 head = 0, mask;

	if (kind == VG_ARG_USTR) {
		if (bpf_probe_read_user(&head, sizeof(head), (void *)ptr))
			return 1;
	} else if (bpf_probe_read_kernel(&head, sizeof(head), (void *)ptr) &&
		   bpf_probe_read_user(&head, sizeof(head), (void *)ptr)) {
		return 1;
	}
	mask = n >= 8 ? ~0ULL : (1ULL << (n * 8)) - 1;
	#pragma unroll
	for (int k = 0; k < VG_GEN_MATCH_VALUES; k++)
		if (k < ma->nvals && ((head ^ (__u64)ma->vals[k]) & mask) == 0)
			return 1;
	return 0;
}

/* A matchArgs filter decided before the arguments are read into the record: exactly for
 * an integer argument and for FileType, by its first bytes for a string one with heads (see above). Every
 * other string filter (Postfix, SubString, ...) may match: the full match decides. */
static __always_inline int vg_arg_may_match(const volatile struct vg_match_arg *ma, __u64 *raw)
{
	__u8 a = ma->arg;

	if (a >= VG_GEN_ARGS || ma->op == VG_OP_CEL)
		return 1; /* the return value, CelExpr: decided after the read */
	if (ma->op == VG_OP_FILETYPE || ma->op == VG_OP_NOTFILETYPE)
		return vg_file_type_match(ma, CFG.args[a].kind, raw[a]);
	switch (CFG.args[a].kind) {
	case VG_ARG_INT:
		return vg_int_match(ma, vg_int_value(raw[a], CFG.args[a].size, CFG.args[a].flags));
	case VG_ARG_USTR:
	case VG_ARG_KSTR:
		if (ma->head_len && (ma->op == VG_OP_EQ || ma->op == VG_OP_IN ||
				     ma->op == VG_OP_PREFIX))
			return vg_str_head_may_match(ma, raw[a]);
		return 1;
	}
	return 1;
}

/*
 * Can selector si match this call? Runs before anything is read or copied, so a call no
 * selector can match costs only these checks. The process filters (matchPIDs,
 * matchNamespaces, matchBinaries, matchParentBinaries) are decided here, exactly and
 * only here; vg_selector_match then checks the rest for the selectors that passed.
 * matchArgs are only pre-checked (vg_arg_may_match): a 1 here is not a match. A filter
 * the selector does not use is a .rodata zero, so the verifier drops its code. The loops
 * are unrolled: their bounds are .rodata constants, so the verifier drops the unused
 * iterations and a miss runs straight-line code, not loops over empty filter slots.
 */
static __always_inline int vg_selector_may_match(struct vg_gen_buf *h, int si, __u64 *raw)
{
	const volatile struct vg_selector_cfg *s = &CFG.sel[si];
	struct task_struct *task = NULL;
	__u32 tgid = 0;

	if (s->npidf || s->bin_op)
		tgid = bpf_get_current_pid_tgid() >> 32;
	if (s->npidf || s->nns)
		task = (struct task_struct *)bpf_get_current_task();
	/* matchPIDs: every filter must hold (values of one filter are OR-ed) */
	#pragma unroll
	for (int f = 0; f < VG_GEN_PIDF; f++) {
		if (f < s->npidf) {
			__u32 pid = s->pids[f].ns ? vg_task_upid(task).nr : tgid;
			int hit = 0;

			#pragma unroll
			for (int k = 0; k < VG_GEN_VALUES; k++)
				if (k < s->pids[f].nvals && s->pids[f].vals[k] == pid)
					hit = 1;
			if (!hit && s->pids[f].follow)
				hit = vg_followed(tgid, vg_pid_bit(si, f));
			if (hit != (s->pids[f].op == VG_OP_IN))
				return 0;
		}
	}
	#pragma unroll
	for (int k = 0; k < VG_GEN_NS; k++) {
		if (k < s->nns) {
			__u32 inum = vg_ns_inum(task, s->ns[k].ns);
			int hit = 0;

			#pragma unroll
			for (int j = 0; j < VG_GEN_VALUES; j++)
				if (j < s->ns[k].nvals && s->ns[k].vals[j] == inum)
					hit = 1;
			if (hit != (s->ns[k].op == VG_OP_IN))
				return 0;
		}
	}
	if (s->bin_op && (s->follow & VG_FOLLOW_BIN)) {
		if (!vg_bin_follow_match(h, s, tgid, si))
			return 0;
	} else if (s->bin_op && !vg_bin_match(h, s, tgid)) {
		return 0;
	}
	#pragma unroll
	for (int k = 0; k < VG_GEN_MATCH_ARGS; k++)
		if (k < s->nargs && !vg_arg_may_match(&s->args[k], raw))
			return 0;
	/* last: a parent lookup costs more than an argument's first bytes, and a call
	 * whose arguments already failed never reads this selector's pbin_op */
	if (s->pbin_op && !vg_parent_bin_match(h, s, si))
		return 0;
	return 1;
}

/* matchNamespaceChanges: has one of the namespaces in mask changed since the process's
 * exec (or fork: proc->ns)? A namespace not known then (inum 0) is not compared. */
static __always_inline int vg_ns_changed(struct task_struct *task, struct vg_proc *proc,
					 __u32 mask)
{
	struct vg_namespaces now = {};
	__u32 *at = (__u32 *)&proc->ns, *cur = (__u32 *)&now;

	vg_read_namespaces(task, &now);
	#pragma unroll
	for (int i = 0; i < 10; i++)
		if ((mask & (1u << i)) && at[i] && at[i] != cur[i])
			return 1;
	return 0;
}

/* Does selector si, whose process filters held (vg_selector_may_match), match? Its
 * capability filters, matchArgs and matchReturnArgs, over the arguments as read. */
static __always_inline int vg_selector_match(struct vg_gen_buf *h, int si, __u64 *raw, __s64 ret)
{
	const volatile struct vg_selector_cfg *s = &CFG.sel[si];
	struct task_struct *task = NULL;
	struct vg_proc *proc = NULL;
	int changed = 0;
	__u32 tgid = 0;

	if (s->ncaps || s->nsc_op) {
		task = (struct task_struct *)bpf_get_current_task();
		tgid = bpf_get_current_pid_tgid() >> 32;
	}
	if (s->nsc_op) {
		/* Tetragon's semantics: In matches a change of a listed namespace, NotIn a
		 * change of one not listed; a process without a record matches neither */
		__u32 mask = s->nsc_op == VG_OP_IN ? s->nsc_mask : ~s->nsc_mask & 0x3ff;

		proc = bpf_map_lookup_elem(&vg_procs, &tgid);
		if (!proc || !(proc->flags & VG_PROCF_NS) || !vg_ns_changed(task, proc, mask))
			return 0;
	}
	for (int k = 0; k < VG_GEN_CAPS; k++) {
		if (k < s->ncaps) {
			const struct cred *cred = BPF_CORE_READ(task, cred);
			__u64 caps = 0, mask = s->caps[k].mask;
			__u8 set = s->caps[k].set;

			/* isNamespaceCapability: only tasks outside the host's user namespace */
			if (s->caps[k].userns && vg_ns_inum(task, 9) == s->caps[k].userns)
				return 0;
			if (set == 1)
				bpf_probe_read_kernel(&caps, 8, &cred->cap_inheritable);
			else if (set == 2)
				bpf_probe_read_kernel(&caps, 8, &cred->cap_permitted);
			else
				bpf_probe_read_kernel(&caps, 8, &cred->cap_effective);
			if (s->caps[k].change) {
				/* Tetragon's semantics: In matches a change of a listed capability,
				 * NotIn a change of only other ones; no change matches neither */
				__u64 at_exec;
				int hit;

				if (!proc)
					proc = bpf_map_lookup_elem(&vg_procs, &tgid);
				if (!proc || !(proc->flags & VG_PROCF_CAPS))
					return 0;
				at_exec = proc->caps[set < 3 ? set : 0];
				if ((at_exec & mask) != (caps & mask))
					hit = s->caps[k].op == VG_OP_IN;
				else if (at_exec != caps)
					hit = s->caps[k].op == VG_OP_NOTIN;
				else
					hit = 0;
				if (!hit)
					return 0;
				changed = 1;
			} else if (((caps & mask) != 0) != (s->caps[k].op == VG_OP_IN)) {
				return 0;
			}
		}
	}
	for (int k = 0; k < VG_GEN_MATCH_ARGS; k++)
		if (k < s->nargs && !vg_arg_match(h, &s->args[k], raw, ret))
			return 0;
	for (int k = 0; k < VG_GEN_MATCH_RET; k++)
		if (k < s->nret && !vg_arg_match(h, &s->ret[k], raw, ret))
			return 0;
	if (changed && proc) {
		/* the change is reported once: the current capabilities become the reference */
		const struct cred *cred = BPF_CORE_READ(task, cred);

		bpf_probe_read_kernel(&proc->caps[0], 8, &cred->cap_effective);
		bpf_probe_read_kernel(&proc->caps[1], 8, &cred->cap_inheritable);
		bpf_probe_read_kernel(&proc->caps[2], 8, &cred->cap_permitted);
	}
	if (s->nsc_op && proc) /* likewise: the current namespaces become the reference */
		vg_read_namespaces(task, &proc->ns);
	return 1;
}

/* ---- actions -------------------------------------------------------------------------- */

#include "vigil/actions.bpf.h"

/* 1: post now; 0: an identical event was posted within the action's window. */
static __always_inline int vg_rate_ok(struct vg_gen_buf *h, int si, int ai, int ret)
{
	/* a matchReturnActions Post (ret) has its own state: selector si + VG_GEN_SELECTORS */
	const volatile struct vg_action_cfg *a = ret ? &CFG.sel[si].ret_actions[ai] :
						      &CFG.sel[si].actions[ai];
	__u64 now = bpf_ktime_get_ns(), *last, hash = 14695981039346656037ULL;
	struct vg_rate_key key = {.selector = ret ? si + VG_GEN_SELECTORS : si};

	if (!a->rate_ns)
		return 1;
	if (a->scope == VG_RATE_THREAD)
		key.scope_id = (__u32)bpf_get_current_pid_tgid();
	else if (a->scope == VG_RATE_PROCESS)
		key.scope_id = bpf_get_current_pid_tgid() >> 32;
	/* the first 40 bytes of every argument (and its length) identify "the same event";
	 * the bytes past a shorter argument are whatever the scratch buffer held before, so
	 * they are masked out */
	for (int i = 0; i < VG_GEN_ARGS; i++) {
		if (i < CFG.nargs) {
			__u64 w[5] = {};
			__u32 off = h->msg.arg_off[i] & VG_GEN_OFF_MASK;
			__u32 len = h->msg.arg_len[i];

			bpf_probe_read_kernel(w, sizeof(w), &h->data[off]);
			hash = (hash ^ len) * 1099511628211ULL;
			for (int k = 0; k < 5; k++) {
				if (len <= k * 8)
					w[k] = 0;
				else if (len < (k + 1) * 8)
					w[k] &= (1ULL << ((len - k * 8) * 8)) - 1;
				hash = (hash ^ w[k]) * 1099511628211ULL;
			}
		}
	}
	key.hash = hash;
	last = bpf_map_lookup_elem(&vg_gen_rate, &key);
	if (last && now - *last < a->rate_ns)
		return 0;
	bpf_map_update_elem(&vg_gen_rate, &key, &now, BPF_ANY);
	return 1;
}

/*
 * Run the matched selector's actions; post unless told not to. Returns the error an
 * Override asks for (0: none) for the fmod_ret / LSM programs to return.
 */
/* what one program of a hook does with a matched selector */
#define VG_PHASE_ALL 0    /* enforce and post */
#define VG_PHASE_DECIDE 1 /* enforce only (fmod_ret of a pair) */
#define VG_PHASE_REPORT 2 /* post only (fexit of a pair) */

static __always_inline void vg_send_chunks(struct vg_gen_buf *h, __u64 *raw);

static __always_inline int vg_act(void *ctx, struct vg_gen_buf *h, __u64 *raw, int si,
				  __u32 size, int phase)
{
	const volatile struct vg_selector_cfg *s = &CFG.sel[si];
	struct vg_generic_msg *m = &h->msg;
	int post = phase != VG_PHASE_DECIDE, enforce = phase != VG_PHASE_REPORT;
	int monitor = vg_monitor();
	int err = 0;
	__u8 stacks = 0;

	if (CFG.ret_action && (m->flags & VG_GENF_RETURN) && enforce)
		vg_sock_track(CFG.ret_action, m->ret);

	m->selector = si;
	m->action = VG_ACT_POST;
	for (int ai = 0; ai < VG_GEN_ACTIONS; ai++) {
		if (ai >= s->nactions)
			break;
		switch (s->actions[ai].action) {
		case VG_ACT_POST:
			if (post && !vg_rate_ok(h, si, ai, 0)) {
				post = 0;
				vg_count(VG_GC_RATE_LIMITED);
			}
			stacks |= s->actions[ai].flags;
			break;
		case VG_ACT_GETURL:
		case VG_ACT_DNSLOOKUP: /* the agent acts on the posted record */
			m->action = s->actions[ai].action;
			break;
		case VG_ACT_TRACKSOCK:
		case VG_ACT_UNTRACKSOCK: {
			__u8 a = s->actions[ai].sock_arg;

			if (enforce && a < VG_GEN_ARGS)
				vg_sock_track(s->actions[ai].action, raw[a]);
			break;
		}
		case VG_ACT_NOTIFYENFORCER:
			m->action = VG_ACT_NOTIFYENFORCER;
			if (monitor) {
				m->flags |= VG_GENF_MONITOR;
				if (enforce)
					vg_count(VG_GC_MONITOR_SIGNAL);
				break;
			}
			if (enforce)
				vg_notify_enforcer(s->actions[ai].arg, s->actions[ai].sig);
			break;
		case VG_ACT_CLEANUPENFORCER:
			m->action = VG_ACT_CLEANUPENFORCER;
			if (enforce)
				vg_enforcer_cleanup();
			break;
		case VG_ACT_NOPOST:
			if (post)
				vg_count(VG_GC_NOPOST);
			post = 0;
			break;
		case VG_ACT_OVERRIDE:
			m->action = VG_ACT_OVERRIDE;
			if (monitor) {
				m->flags |= VG_GENF_MONITOR;
				if (enforce)
					vg_count(VG_GC_MONITOR_OVERRIDE);
				break;
			}
			if (enforce) {
				err = (__s32)s->actions[ai].arg;
				h->overridden = m->tid;
				vg_count(VG_GC_OVERRIDE);
			}
			break;
#ifdef VG_ACTION_SET
		case VG_ACT_SET: /* generic_usdt.bpf.c: write a USDT argument */
			m->action = VG_ACT_SET;
			if (monitor) {
				m->flags |= VG_GENF_MONITOR;
				break;
			}
			if (enforce && !VG_ACTION_SET(s->actions[ai].index, s->actions[ai].arg))
				vg_count(VG_GC_SET);
			break;
#endif
		case VG_ACT_SIGKILL:
		case VG_ACT_SIGNAL:
			m->action = s->actions[ai].action;
			if (monitor) {
				m->flags |= VG_GENF_MONITOR;
				if (enforce)
					vg_count(VG_GC_MONITOR_SIGNAL);
				break;
			}
			if (enforce) {
				bpf_send_signal(s->actions[ai].action == VG_ACT_SIGKILL ? 9 :
						s->actions[ai].arg);
				vg_count(VG_GC_SIGNAL);
			}
			break;
		}
	}
	/* matchReturnActions: where the return value is (the exit program), after the
	 * selector's actions; the event is posted only if neither list says NoPost. Only the
	 * program with the return value runs them (never the fmod_ret of a pair), so they
	 * act whatever the phase. A stack a return Post asks for is taken here, at the
	 * return; argSock names an argument as read at the call's entry. */
	for (int ai = 0; ai < VG_GEN_ACTIONS; ai++) {
		if (ai >= s->nret_actions || !(m->flags & VG_GENF_RETURN))
			break;
		switch (s->ret_actions[ai].action) {
		case VG_ACT_POST:
			m->ret_action = VG_ACT_POST;
			if (post && !vg_rate_ok(h, si, ai, 1)) {
				post = 0;
				vg_count(VG_GC_RATE_LIMITED);
			}
			stacks |= s->ret_actions[ai].flags;
			break;
		case VG_ACT_GETURL:
		case VG_ACT_DNSLOOKUP: /* the agent acts on the posted record's ret_action */
			m->ret_action = s->ret_actions[ai].action;
			break;
		case VG_ACT_TRACKSOCK:
		case VG_ACT_UNTRACKSOCK: {
			__u8 a = s->ret_actions[ai].sock_arg;

			m->ret_action = s->ret_actions[ai].action;
			if (a < VG_GEN_ARGS)
				vg_sock_track(s->ret_actions[ai].action, raw[a]);
			break;
		}
		case VG_ACT_NOTIFYENFORCER:
			m->ret_action = VG_ACT_NOTIFYENFORCER;
			if (monitor) {
				m->flags |= VG_GENF_MONITOR;
				vg_count(VG_GC_MONITOR_SIGNAL);
				break;
			}
			vg_notify_enforcer(s->ret_actions[ai].arg, s->ret_actions[ai].sig);
			break;
		case VG_ACT_CLEANUPENFORCER:
			m->ret_action = VG_ACT_CLEANUPENFORCER;
			vg_enforcer_cleanup();
			break;
		case VG_ACT_NOPOST:
			m->ret_action = VG_ACT_NOPOST;
			if (post)
				vg_count(VG_GC_NOPOST);
			post = 0;
			break;
		case VG_ACT_SIGKILL:
		case VG_ACT_SIGNAL:
			m->ret_action = s->ret_actions[ai].action;
			if (monitor) {
				m->flags |= VG_GENF_MONITOR;
				vg_count(VG_GC_MONITOR_SIGNAL);
				break;
			}
			bpf_send_signal(s->ret_actions[ai].action == VG_ACT_SIGKILL ? 9 :
					s->ret_actions[ai].arg);
			vg_count(VG_GC_SIGNAL);
			break;
		}
	}
	if (post) {
		if (stacks & (VG_ACTF_KSTACK | VG_ACTF_USTACK)) {
			size = sizeof(*m) + vg_stacks(ctx, h, size - sizeof(*m), stacks);
			m->hdr.size = size;
		}
		if (stacks & VG_ACTF_IMA) {
			size = sizeof(*m) + vg_ima_append(h, size - sizeof(*m));
			m->hdr.size = size;
		}
		vg_send_chunks(h, raw);
		vg_send(h, size);
		vg_count(VG_GC_POST);
	}
	return err;
}

/* maxData: each such buffer's bytes beyond the record's first VG_GEN_STR_MAX, as
 * VG_MSG_DATA records sent just before the record (which then carries VG_GENF_CHUNKS),
 * by one bpf_loop over (argument, chunk) pairs: one verification of the step, whatever
 * the number of buffers and chunks (kernels before 6.4 verify each bpf_loop call site's
 * callback again, so one call site keeps 6.1 cheap). A chunk that cannot be read ends
 * that buffer there (user space reports it truncated); a full ring buffer ends them all. */
/* (no vg_ prefix: BPF-only, with pointers, not a layout shared with Python) */
struct chunk_ctx {
	struct vg_generic_msg *m;
	struct vg_chunk_buf *c;
	__u64 ptr[VG_GEN_ARGS];
	__u32 total[VG_GEN_ARGS]; /* bytes to send of argument i (0: none, or ended) */
};

#define VG_CHUNK_STEPS (VG_DATA_CHUNKS - 1) /* chunks of one buffer after the record's */

static long vg_chunk_step(__u64 k, struct chunk_ctx *x)
{
	struct vg_chunk_buf *c = x->c;
	__u32 a = (__u32)(k / VG_CHUNK_STEPS), off, n, total;
	long r;

	if (a >= VG_GEN_ARGS)
		return 1;
	total = x->total[a];
	off = ((__u32)(k % VG_CHUNK_STEPS) + 1) * VG_DATA_CHUNK;
	if (off >= total)
		return 0; /* this buffer is done; the next argument's chunks follow */
	n = total - off;
	if (n > VG_DATA_CHUNK)
		n = VG_DATA_CHUNK;
	if (CFG.args[a].kind == VG_ARG_KBUF)
		r = bpf_probe_read_kernel(c->data, n, (void *)(x->ptr[a] + off));
	else
		r = bpf_probe_read_user(c->data, n, (void *)(x->ptr[a] + off));
	if (r && CFG.args[a].kind == VG_ARG_IOV_ITER) /* a kvec */
		r = bpf_probe_read_kernel(c->data, n, (void *)(x->ptr[a] + off));
	if (r) {
		x->total[a] = 0;
		return 0;
	}
	c->msg.hdr.op = VG_MSG_DATA;
	c->msg.hdr.flags = 0;
	c->msg.hdr.size = sizeof(c->msg) + n;
	c->msg.hdr.ktime = x->m->hdr.ktime;
	c->msg.tid = x->m->tid;
	c->msg.hook_id = x->m->hook_id;
	c->msg.off = off;
	c->msg.len = n;
	c->msg.arg = a;
	if (bpf_ringbuf_output(&vg_events, c, sizeof(c->msg) + n, vg_wakeup_flags())) {
		vg_count_drop(VG_MSG_DATA, VG_DROP_RINGBUF_FULL);
		return 1;
	}
	vg_count_sent(VG_MSG_DATA);
	return 0;
}

static __always_inline void vg_send_chunks(struct vg_gen_buf *h, __u64 *raw)
{
	struct vg_generic_msg *m = &h->msg;
	__u32 zero = 0, any = 0;
	struct chunk_ctx x = {};

	if (!CFG.chunk_args)
		return;
	for (int i = 0; i < VG_GEN_ARGS; i++) {
		__u32 total = m->orig_len[i];

		if (!(CFG.chunk_args & (1u << i)))
			continue;
		if (total > VG_MAX_DATA)
			total = VG_MAX_DATA;
		if (total <= VG_GEN_STR_MAX || m->arg_len[i] < VG_GEN_STR_MAX)
			continue;
		x.total[i] = total;
		x.ptr[i] = raw[i];
		any = 1;
	}
	if (!any)
		return;
	x.c = bpf_map_lookup_elem(&vg_gen_chunk, &zero);
	if (!x.c)
		return;
	x.m = m;
	m->flags |= VG_GENF_CHUNKS;
	bpf_loop(VG_GEN_ARGS * VG_CHUNK_STEPS, vg_chunk_step, &x, 0);
}

/* ---- the pipeline --------------------------------------------------------------------- */

/* List hooks (VG_HOOKF_LIST): which function of the list fired. Kprobes carry the
 * function's index as their attach cookie; raw_syscalls records carry the syscall id
 * (`long id` at offset 8 of both sys_enter and sys_exit). */
static __always_inline __u32 vg_list_func(void *ctx)
{
	if (CFG.kind == VG_HOOK_KPROBE)
		return (__u32)bpf_get_attach_cookie(ctx);
	if (CFG.kind == VG_HOOK_TRACEPOINT) {
		long nr = -1;

		bpf_probe_read_kernel(&nr, sizeof(nr), (char *)ctx + 8);
		return (__u32)nr;
	}
	return 0;
}

static __always_inline int vg_gen_run_phase(void *ctx, __u64 *raw, __s64 ret, int with_ret,
					    int phase)
{
	__u32 zero = 0, off = 0, size, maybe = 0;
	struct vg_gen_buf *h = bpf_map_lookup_elem(&vg_gen_heap, &zero);
	struct vg_generic_msg *m;
	__u64 id;

	if (!h || !vg_pf_allowed()) /* pod-scoped policy, task outside its pods */
		return 0;
	#pragma unroll
	for (int i = 0; i < VG_GEN_ARGS; i++)
		if (i < CFG.nargs)
			raw[i] = vg_resolve(i, raw[i]);
	/* the selectors that can still match, decided before anything is read: a call none
	 * can match (the common case) leaves here without touching the record */
	for (int si = 0; si < VG_GEN_SELECTORS; si++)
		if (si < CFG.nsel && vg_pf_sel_allowed(si) && vg_selector_may_match(h, si, raw))
			maybe |= 1u << si;
	if (CFG.nsel && !maybe)
		return 0;
	id = bpf_get_current_pid_tgid();
	m = &h->msg;
	__builtin_memset(m, 0, sizeof(*m));
	m->hdr.op = CFG.op;
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = id >> 32;
	m->tid = (__u32)id;
	m->hook_id = CFG.hook_id;
	m->nargs = CFG.nargs;
	m->action = VG_ACT_POST;
	if (CFG.flags & VG_HOOKF_LIST)
		m->func = vg_list_func(ctx);
	if (with_ret) {
		m->ret = ret;
		m->flags |= VG_GENF_RETURN;
	}
	for (int i = 0; i < VG_GEN_ARGS; i++) {
		if (i < CFG.nargs) {
			__u32 n;

			m->arg_off[i] = off;
			n = vg_read_arg(ctx, h, i, raw, off, ret);
			m->arg_len[i] = n;
			off += (n + 7) & ~7;
			if (off > VG_GEN_DATA_MAX - VG_GEN_STR_MAX)
				off = VG_GEN_DATA_MAX - VG_GEN_STR_MAX;
		}
	}
	if (with_ret && CFG.ret_kind > VG_ARG_INT) {
		/* a string return value (a char * function): after the arguments */
		__u32 max = VG_GEN_STR_MAX;
		long r;

		if (CFG.ret_kind == VG_ARG_USTR)
			r = bpf_probe_read_user_str(&h->data[off & VG_GEN_OFF_MASK], max, (void *)ret);
		else
			r = bpf_probe_read_kernel_str(&h->data[off & VG_GEN_OFF_MASK], max, (void *)ret);
		m->flags |= VG_GENF_RET_STR;
		m->ret_off = off;
		m->ret_len = r > 0 ? (r - 1) & (VG_GEN_STR_MAX - 1) : 0;
		off += (m->ret_len + 8) & ~7;
		if (off > VG_GEN_DATA_MAX)
			off = VG_GEN_DATA_MAX;
	}
	size = sizeof(*m) + off;
	if (size > sizeof(*m) + VG_GEN_DATA_MAX)
		size = sizeof(*m) + VG_GEN_DATA_MAX;
	m->hdr.size = size;
	vg_sock_owner_apply(m, raw);
	if (!CFG.nsel) {
		if (CFG.ret_action && with_ret && phase != VG_PHASE_REPORT)
			vg_sock_track(CFG.ret_action, ret);
		if (phase != VG_PHASE_DECIDE) {
			vg_send_chunks(h, raw);
			vg_send(h, size);
			vg_count(VG_GC_POST);
		}
		return 0;
	}
	for (int si = 0; si < VG_GEN_SELECTORS; si++)
		if (si < CFG.nsel && (maybe & (1u << si)) && vg_selector_match(h, si, raw, ret))
			return vg_act(ctx, h, raw, si, size, phase);
	return 0;
}

static __always_inline int vg_gen_run(void *ctx, __u64 *raw, __s64 ret, int with_ret)
{
	return vg_gen_run_phase(ctx, raw, ret, with_ret, VG_PHASE_ALL);
}

/* ---- entry points (the loader autoloads exactly one, or the syscall pair) ------------- */

/* The 8-byte word at byte `off` of a tracepoint record, loaded from the context directly.
 * The verifier takes a context offset only from the load instruction itself, so each
 * offset is its own load; inline assembly keeps the compiler from merging them into one
 * load at a computed address. */
#define VG_CTX_U64(ctx, off) ({							\
	__u64 __w;								\
	asm volatile("%0 = *(u64 *)(%1 + " #off ")" : "=r"(__w) : "r"(ctx));	\
	__w;									\
})

/* 1 and *v set: the u64 at `off` is one of the six syscall argument slots (offsets 16 to
 * 56: where every syscalls/sys_enter_X record keeps its arguments). */
static __always_inline int vg_tp_slot(void *ctx, __u16 off, __u64 *v)
{
	switch (off) {
	case 16: *v = VG_CTX_U64(ctx, 16); return 1;
	case 24: *v = VG_CTX_U64(ctx, 24); return 1;
	case 32: *v = VG_CTX_U64(ctx, 32); return 1;
	case 40: *v = VG_CTX_U64(ctx, 40); return 1;
	case 48: *v = VG_CTX_U64(ctx, 48); return 1;
	case 56: *v = VG_CTX_U64(ctx, 56); return 1;
	}
	return 0;
}

/* The hook's fields of the tracepoint record: 8-byte words in the argument slots by a
 * direct load (no helper call), anything else through bpf_probe_read_kernel. A syscall
 * hook's `data` with source current_task (no field of the record) is the calling task. */
static __always_inline void vg_tp_raw(void *ctx, __u64 *raw)
{
	for (int i = 0; i < VG_GEN_ARGS; i++) {
		if (i < CFG.nargs) {
			__u64 v = 0;

			if (CFG.args[i].flags & VG_ARGF_SRC_TASK) {
				raw[i] = bpf_get_current_task();
				continue;
			}
			if (CFG.args[i].size == 8 && vg_tp_slot(ctx, CFG.args[i].offset, &v)) {
				raw[i] = v;
				continue;
			}
			/* a field with `resolve` is a pointer; `size` is what the path ends on */
			bpf_probe_read_kernel(&v, CFG.args[i].size > 8 || CFG.args[i].nres ? 8 :
					      CFG.args[i].size, (char *)ctx + CFG.args[i].offset);
			raw[i] = v;
		}
	}
}

SEC("tracepoint")
int vg_gen_tp(void *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};

	if (CFG.syscall_nr >= 0) {
		long nr = 0;

		bpf_probe_read_kernel(&nr, sizeof(nr), (char *)ctx + 8);
		if (nr != CFG.syscall_nr)
			return 0;
	}
	if (CFG.flags & VG_HOOKF_LIST) { /* a syscall list on raw_syscalls: its ids only */
		struct vg_int_key k = {};
		long nr = -1;

		bpf_probe_read_kernel(&nr, sizeof(nr), (char *)ctx + 8);
		k.v = nr;
		if (!bpf_map_lookup_elem(&vg_int_set, &k))
			return 0;
	}
	vg_tp_raw(ctx, raw);
	if (CFG.has_return) { /* keep the arguments for vg_gen_tp_ret */
		__u64 id = bpf_get_current_pid_tgid();

		bpf_map_update_elem(&vg_gen_entries, &id, raw, BPF_ANY);
		return 0;
	}
	vg_gen_run(ctx, raw, 0, 0);
	return 0;
}

/* syscalls/sys_exit_X: `long ret` at offset 16 of the record. */
SEC("tracepoint")
int vg_gen_tp_ret(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vg_gen_entry *e = bpf_map_lookup_elem(&vg_gen_entries, &id);
	__u64 raw[VG_GEN_ARGS];
	long ret = 0;

	if (!e)
		return 0;
	__builtin_memcpy(raw, e->raw, sizeof(raw));
	bpf_map_delete_elem(&vg_gen_entries, &id);
	bpf_probe_read_kernel(&ret, sizeof(ret), (char *)ctx + 16);
	vg_gen_run(ctx, raw, ret, 1);
	return 0;
}

/* The verifier refuses a variable offset into the context, and a direct read of args[n]
 * would make attaching fail for a tracepoint with fewer than n + 1 arguments (the
 * program's largest context offset is checked against the tracepoint's): copy the one
 * slot through a helper instead. */
static __always_inline __u64 vg_rawtp_arg(struct bpf_raw_tracepoint_args *ctx, __u32 n)
{
	__u64 v = 0;

	switch (n) {
	case 0: bpf_probe_read_kernel(&v, sizeof(v), &ctx->args[0]); break;
	case 1: bpf_probe_read_kernel(&v, sizeof(v), &ctx->args[1]); break;
	case 2: bpf_probe_read_kernel(&v, sizeof(v), &ctx->args[2]); break;
	case 3: bpf_probe_read_kernel(&v, sizeof(v), &ctx->args[3]); break;
	case 4: bpf_probe_read_kernel(&v, sizeof(v), &ctx->args[4]); break;
	case 5: bpf_probe_read_kernel(&v, sizeof(v), &ctx->args[5]); break;
	}
	return v;
}

SEC("raw_tp")
int vg_gen_rawtp(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};

	for (int i = 0; i < VG_GEN_ARGS; i++)
		if (i < CFG.nargs)
			raw[i] = vg_rawtp_arg(ctx, CFG.args[i].src);
	vg_gen_run(ctx, raw, 0, 0);
	return 0;
}

static __always_inline __u64 vg_regs_arg(struct pt_regs *regs, __u8 n)
{
	switch (n) {
	case 0: return PT_REGS_PARM1_CORE(regs);
	case 1: return PT_REGS_PARM2_CORE(regs);
	case 2: return PT_REGS_PARM3_CORE(regs);
	case 3: return PT_REGS_PARM4_CORE(regs);
	case 4: return PT_REGS_PARM5_CORE(regs);
	}
	return 0;
}

/* The syscall's argument n from the struct pt_regs a syscall function (__x64_sys_X)
 * takes: the x86_64 syscall convention (di, si, dx, r10, r8, r9). */
static __always_inline __u64 vg_sys_regs_arg(struct pt_regs *regs, __u8 n)
{
	switch (n) {
	case 0: return BPF_CORE_READ(regs, di);
	case 1: return BPF_CORE_READ(regs, si);
	case 2: return BPF_CORE_READ(regs, dx);
	case 3: return BPF_CORE_READ(regs, r10);
	case 4: return BPF_CORE_READ(regs, r8);
	case 5: return BPF_CORE_READ(regs, r9);
	}
	return 0;
}

/* A hook's `data` entries (after its args): source current_task is the calling task,
 * source pt_regs the register at byte `offset` of struct pt_regs (the probe's context);
 * `resolve` then follows the path from there. Other args pass through unchanged. */
static __always_inline __u64 vg_data_src(void *regs, int i, __u64 v)
{
	__u64 x = 0;

	if (CFG.args[i].flags & VG_ARGF_SRC_TASK)
		return bpf_get_current_task();
	if (CFG.args[i].flags & VG_ARGF_SRC_REGS) {
		bpf_probe_read_kernel(&x, sizeof(x), (char *)regs + (CFG.args[i].offset & 0xff));
		return x;
	}
	return v;
}

#ifndef VG_GEN_TRACEPOINTS_ONLY /* generic_tp.bpf.c leaves the other entry programs out */
SEC("uprobe")
int vg_gen_uprobe(struct pt_regs *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};

	for (int i = 0; i < VG_GEN_ARGS; i++)
		if (i < CFG.nargs)
			raw[i] = vg_data_src(ctx, i, vg_regs_arg(ctx, CFG.args[i].src));
	if (CFG.has_return) { /* merged with the return value in vg_gen_uretprobe */
		__u64 id = bpf_get_current_pid_tgid();

		bpf_map_update_elem(&vg_gen_entries, &id, raw, BPF_ANY);
		return 0;
	}
	vg_gen_run(ctx, raw, 0, 0);
	return 0;
}

/* Override on a uprobe at a function's entry (x86-64): the function does not run. The
 * matched selector's argError becomes the return value (rax, sign-extended) and the
 * program returns to the caller as the function's `ret` would: ip = the return address
 * the call pushed (the word at sp), sp past it. The kernel then resumes the task there
 * instead of executing the probed instruction. Writing the registers needs a kernel whose
 * uprobe programs may write their context (feature probe uprobe_regs); the loader loads
 * this program instead of vg_gen_uprobe only for such hooks. */
SEC("uprobe")
int vg_gen_uprobe_override(struct pt_regs *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};
	__u32 zero = 0;
	struct vg_gen_buf *h = bpf_map_lookup_elem(&vg_gen_heap, &zero);
	__u64 ret_addr = 0;
	__s64 err;

	if (!h)
		return 0;
	for (int i = 0; i < VG_GEN_ARGS; i++)
		if (i < CFG.nargs)
			raw[i] = vg_data_src(ctx, i, vg_regs_arg(ctx, CFG.args[i].src));
	h->overridden = 0;
	err = vg_gen_run(ctx, raw, 0, 0);
	if (h->overridden != (__u32)bpf_get_current_pid_tgid())
		return 0;
	h->overridden = 0;
	/* the word at sp unreadable (not resident): the function runs after all */
	if (bpf_probe_read_user(&ret_addr, sizeof(ret_addr), (void *)ctx->sp) || !ret_addr)
		return 0;
	ctx->ax = (__u64)err;
	ctx->ip = ret_addr;
	ctx->sp = ctx->sp + 8;
	return 0;
}

/* return: true. With arguments, the entry program saved them (has_return): the call's
 * argument registers are gone by now. */
SEC("uretprobe")
int vg_gen_uretprobe(struct pt_regs *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};

	if (CFG.has_return) {
		__u64 id = bpf_get_current_pid_tgid();
		struct vg_gen_entry *e = bpf_map_lookup_elem(&vg_gen_entries, &id);

		if (!e)
			return 0;
		__builtin_memcpy(raw, e->raw, sizeof(raw));
		bpf_map_delete_elem(&vg_gen_entries, &id);
	}
	vg_gen_run(ctx, raw, PT_REGS_RC_CORE(ctx), 1);
	return 0;
}

/* ---- kernel functions ---------------------------------------------------------------- */

static __always_inline __s64 vg_ret_value(__u64 ret)
{
	return CFG.ret_size ? vg_int_value(ret, CFG.ret_size, CFG.ret_flags) : (__s64)ret;
}

/* Entry of a kprobe (or kprobe.multi) on a kernel function: its arguments from the
 * probe's registers; on a syscall function (VG_HOOKF_SYSWRAP: a syscall hook with
 * pt_regs data), the syscall's arguments from the caller's saved pt_regs, the function's
 * one parameter, while pt_regs data still reads the probe's own registers. */
static __always_inline int vg_kentry(struct pt_regs *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};
	struct pt_regs *sys = 0;

	if (CFG.flags & VG_HOOKF_SYSWRAP)
		sys = (struct pt_regs *)PT_REGS_PARM1_CORE(ctx);
	for (int i = 0; i < VG_GEN_ARGS; i++)
		if (i < CFG.nargs)
			raw[i] = vg_data_src(ctx, i, sys ? vg_sys_regs_arg(sys, CFG.args[i].src) :
					     vg_regs_arg(ctx, CFG.args[i].src));
	if (CFG.has_return) { /* merged with the return in vg_kexit */
		__u64 id = bpf_get_current_pid_tgid();

		bpf_map_update_elem(&vg_gen_entries, &id, raw, BPF_ANY);
		return 0;
	}
	vg_gen_run(ctx, raw, 0, 0);
	return 0;
}

static __always_inline int vg_kexit(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vg_gen_entry *e = bpf_map_lookup_elem(&vg_gen_entries, &id);
	__u64 raw[VG_GEN_ARGS];

	if (!e)
		return 0;
	__builtin_memcpy(raw, e->raw, sizeof(raw));
	bpf_map_delete_elem(&vg_gen_entries, &id);
	vg_gen_run(ctx, raw, vg_ret_value(PT_REGS_RC_CORE(ctx)), 1);
	return 0;
}

SEC("kprobe")
int vg_gen_kprobe(struct pt_regs *ctx)
{
	return vg_kentry(ctx);
}

SEC("kretprobe")
int vg_gen_kretprb(struct pt_regs *ctx)
{
	return vg_kexit(ctx);
}

SEC("kprobe.multi")
int vg_gen_kpm(struct pt_regs *ctx)
{
	return vg_kentry(ctx);
}

SEC("kretprobe.multi")
int vg_gen_kretpm(struct pt_regs *ctx)
{
	return vg_kexit(ctx);
}

/* BTF trampolines: arguments by position whatever the function's prototype; for a
 * syscall function (VG_HOOKF_SYSWRAP), the syscall's arguments from its pt_regs. */
static __always_inline void vg_btf_args(void *ctx, __u64 *raw)
{
	__u64 regs = 0;

	if (CFG.flags & VG_HOOKF_SYSWRAP)
		bpf_get_func_arg(ctx, 0, &regs);
	for (int i = 0; i < VG_GEN_ARGS; i++) {
		if (i < CFG.nargs) {
			__u64 v = 0;

			if (CFG.flags & VG_HOOKF_SYSWRAP)
				v = vg_sys_regs_arg((struct pt_regs *)regs, CFG.args[i].src);
			else
				bpf_get_func_arg(ctx, CFG.args[i].src, &v);
			if (CFG.args[i].flags & VG_ARGF_SRC_TASK)
				v = bpf_get_current_task();
			raw[i] = v;
		}
	}
}

SEC("fentry")
int vg_gen_fentry(void *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};

	vg_btf_args(ctx, raw);
	vg_gen_run(ctx, raw, 0, 0);
	return 0;
}

SEC("fexit")
int vg_gen_fexit(void *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {}, ret = 0;

	vg_btf_args(ctx, raw);
	bpf_get_func_ret(ctx, &ret);
	vg_gen_run_phase(ctx, raw, vg_ret_value(ret), 1,
			 CFG.flags & VG_HOOKF_PAIR ? VG_PHASE_REPORT : VG_PHASE_ALL);
	return 0;
}

/* Override on security_* and syscall functions: a non-zero return skips the function and
 * is its result. 64 bits, sign-extended: a syscall function returns a long, and an int
 * -1 left in the low half would reach the caller as 4294967295, not -EPERM. */
SEC("fmod_ret")
long vg_gen_fmodret(void *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};

	vg_btf_args(ctx, raw);
	return (long)vg_gen_run_phase(ctx, raw, 0, 0,
				      CFG.flags & VG_HOOKF_PAIR ? VG_PHASE_DECIDE : VG_PHASE_ALL);
}

/* BPF LSM: Override's error denies the operation. */
SEC("lsm")
int vg_gen_lsm(void *ctx)
{
	__u64 raw[VG_GEN_ARGS] = {};

	vg_btf_args(ctx, raw);
	return vg_gen_run(ctx, raw, 0, 0);
}
#endif /* VG_GEN_TRACEPOINTS_ONLY */

/* ---- followChildren / followForks (attached only when a selector follows) ------------- */

static __always_inline void vg_follow_add(__u32 tgid, __u32 bits)
{
	__u32 *old;
	long err;

	if (!bits)
		return;
	old = bpf_map_lookup_elem(&vg_follow, &tgid);
	if (old) {
		__sync_fetch_and_or(old, bits);
		return;
	}
	err = bpf_map_update_elem(&vg_follow, &tgid, &bits, BPF_NOEXIST);
	if (err == -17 /* EEXIST: raced with another CPU */) {
		old = bpf_map_lookup_elem(&vg_follow, &tgid);
		if (old)
			__sync_fetch_and_or(old, bits);
	} else if (err) {
		vg_count_drop(CFG.op, VG_DROP_FOLLOW_FULL);
	}
}

/* An exec of a binary in a followChildren set (matchBinaries or matchParentBinaries)
 * marks the process (kept across later execs). */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(vg_gen_fl_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 zero = 0, orig = 0, len, bits = 0;
	struct vg_gen_buf *h = bpf_map_lookup_elem(&vg_gen_heap, &zero);

	if (!h)
		return 0;
	len = vg_read_file(h, 0, BPF_CORE_READ(bprm, file), &orig);
	for (int si = 0; si < VG_GEN_SELECTORS; si++) {
		if (si < CFG.nsel && (CFG.sel[si].follow & VG_FOLLOW_BIN) &&
		    vg_str_match(h, VG_OP_IN, CFG.sel[si].bin_set, h->data, len))
			bits |= 1u << si;
		if (si < CFG.nsel && (CFG.sel[si].follow & VG_FOLLOW_PBIN) &&
		    vg_str_match(h, VG_OP_IN, CFG.sel[si].pbin_set, h->data, len))
			bits |= 1u << (vg_pbin_bit(si) & 31);
	}
	vg_follow_add(BPF_CORE_READ(task, tgid), bits);
	return 0;
}

/* A new process inherits its parent's marks; followForks marks children of listed pids. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(vg_gen_fl_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid), ctgid = BPF_CORE_READ(child, tgid);
	__u32 *pbits, bits = 0;

	if (BPF_CORE_READ(child, pid) != ctgid)
		return 0; /* a thread */
	pbits = bpf_map_lookup_elem(&vg_follow, &ptgid);
	if (pbits)
		bits = *pbits;
	for (int si = 0; si < VG_GEN_SELECTORS; si++) {
		if (si >= CFG.nsel || !(CFG.sel[si].follow & VG_FOLLOW_PIDS))
			continue;
		for (int f = 0; f < VG_GEN_PIDF; f++) {
			const volatile struct vg_pid_match *m = &CFG.sel[si].pids[f];
			__u32 pid;

			if (f >= CFG.sel[si].npidf || !m->follow)
				continue;
			pid = m->ns ? vg_task_upid(parent).nr : ptgid;
			for (int k = 0; k < VG_GEN_VALUES; k++)
				if (k < m->nvals && m->vals[k] == pid)
					bits |= 1u << (vg_pid_bit(si, f) & 31);
		}
	}
	vg_follow_add(ctgid, bits);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(vg_gen_fl_exit, struct task_struct *task)
{
	__u32 tgid;

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0; /* not the last thread */
	tgid = BPF_CORE_READ(task, tgid);
	bpf_map_delete_elem(&vg_follow, &tgid);
	return 0;
}
