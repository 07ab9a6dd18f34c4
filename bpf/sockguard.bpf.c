// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sockguard.bpf.c - one security_socket_{connect,bind,sendmsg} hook of one policy,
 * enforced by cgroup programs where BPF LSM and fmod_ret are refused.
 *
 * The loader opens a fresh copy per hook, writes its struct vg_sock_cfg into
 * .rodata.sock, autoloads the two programs of the hook (IPv4 and IPv6) and attaches them
 * (bpf_link, multi-attach) to each cgroup in the policy's scope; the kernel runs them for
 * every process in those cgroups and their descendants, and only there.
 *
 * Per call: normalise the address (v4-mapped IPv6 counts as IPv4, so an AF_INET6 socket
 * cannot walk around an IPv4 rule) -> selectors, first match wins -> actions: Override
 * refuses the call (return 0, errno set with bpf_set_retval), Post / NoPost. Pod scoping
 * and matchWorkloads are checked on the calling task's cgroup as in generic hooks
 * (policyfilter.bpf.h: .rodata.pf, vg_pf_cgroups shared by fd). Records use
 * the generic hook layout (vg_generic_msg, op GENERIC_KPROBE, one sockaddr argument), so
 * user space renders them as process_kprobe events like any other hook.
 */
#define VG_NO_TASK_HELPERS /* THROTTLE_START from here carries no cgroup name */
#include "vigil/common.bpf.h"
#include <bpf/bpf_endian.h>
#include "vigil/procs.bpf.h"
#include "vigil/policyfilter.bpf.h"

const volatile struct vg_sock_cfg vg_sock SEC(".rodata.sock") = {};

#define CFG vg_sock
#define VG_AF_INET 2
#define VG_AF_INET6 10
#define VG_SA_LEN 20 /* u16 family, u16 port (host order), u8 addr[16] */

struct vg_sk_buf {
	struct vg_generic_msg msg;
	__u8 sa[24];
	struct vg_eq_key eq;
	struct vg_pfx_key pfx;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_sk_buf);
} vg_sk_heap SEC(".maps");

/* Matching values, private to this hook (sizes set by the loader). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vg_addr_key);
	__type(value, __u8);
} vg_sk_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, struct vg_eq_key);
	__type(value, __u8);
} vg_sk_bin_eq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vg_pfx_key);
	__type(value, __u8);
} vg_sk_bin_pfx SEC(".maps");

/* The call's address as the record carries it; v4-mapped IPv6 becomes IPv4. */
static __always_inline void vg_sk_addr_of(struct bpf_sock_addr *ctx, int v6, __u8 *sa)
{
	__u32 w[4];

	__builtin_memset(sa, 0, 24);
	*(__u16 *)(sa + 2) = bpf_ntohs((__u16)ctx->user_port);
	if (!v6) {
		*(__u16 *)sa = VG_AF_INET;
		w[0] = ctx->user_ip4;
		__builtin_memcpy(sa + 4, &w[0], 4);
		return;
	}
	w[0] = ctx->user_ip6[0];
	w[1] = ctx->user_ip6[1];
	w[2] = ctx->user_ip6[2];
	w[3] = ctx->user_ip6[3];
	if (w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff)) {
		*(__u16 *)sa = VG_AF_INET;
		__builtin_memcpy(sa + 4, &w[3], 4);
		return;
	}
	*(__u16 *)sa = VG_AF_INET6;
	__builtin_memcpy(sa + 4, w, 16);
}

static __always_inline int vg_sk_field(const volatile struct vg_sock_match *m, const __u8 *sa,
				       __u32 proto)
{
	__u16 family = *(__u16 *)sa, port = *(__u16 *)(sa + 2);
	struct vg_addr_key key = {};
	int hit = 0;

	switch (m->field) {
	case VG_SKF_ADDR:
		key.prefixlen = 64 + (family == VG_AF_INET ? 32 : 128);
		key.set = m->set;
		key.family = family;
		__builtin_memcpy(key.addr, sa + 4, 16);
		hit = bpf_map_lookup_elem(&vg_sk_addr, &key) != NULL;
		break;
	case VG_SKF_PORT:
		for (int k = 0; k < VG_SOCK_VALUES; k++)
			if (k < m->nvals && port >= (m->vals[k] >> 16) && port <= (m->vals[k] & 0xffff))
				hit = 1;
		break;
	case VG_SKF_FAMILY:
		for (int k = 0; k < VG_SOCK_VALUES; k++)
			if (k < m->nvals && family == m->vals[k])
				hit = 1;
		break;
	case VG_SKF_PROTOCOL:
		for (int k = 0; k < VG_SOCK_VALUES; k++)
			if (k < m->nvals && proto == m->vals[k])
				hit = 1;
		break;
	}
	return m->negate ? !hit : hit;
}

/* matchBinaries against the caller's binary (vg_procs, kept by the base sensor). */
static __always_inline int vg_sk_binary(struct vg_sk_buf *h, int si, __u32 tgid)
{
	__u8 op = CFG.sel[si].bin_op;
	struct vg_proc *p;
	__u32 len = 0;
	int hit = 0;

	if (op == VG_OP_NONE)
		return 1;
	p = bpf_map_lookup_elem(&vg_procs, &tgid);
	if (p)
		len = p->bin_len;
	if (op == VG_OP_IN || op == VG_OP_NOTIN) {
		__builtin_memset(h->eq.s, 0, sizeof(h->eq.s));
		h->eq.set = CFG.sel[si].bin_set;
		h->eq.len = len;
		if (p && len < VG_STR_KEY &&
		    !bpf_probe_read_kernel(h->eq.s, len & (VG_STR_KEY - 1), p->bin))
			hit = bpf_map_lookup_elem(&vg_sk_bin_eq, &h->eq) != NULL;
		return op == VG_OP_IN ? hit : !hit;
	}
	if (len > VG_PFX_KEY)
		len = VG_PFX_KEY;
	h->pfx.prefixlen = 32 + 8 * len;
	h->pfx.set = CFG.sel[si].bin_set;
	if (p && (len == 0 || !bpf_probe_read_kernel(h->pfx.s, len, p->bin)))
		hit = bpf_map_lookup_elem(&vg_sk_bin_pfx, &h->pfx) != NULL;
	return op == VG_OP_PREFIX ? hit : !hit;
}

static __always_inline int vg_sk_selector(struct vg_sk_buf *h, int si, __u32 proto, __u32 tgid)
{
	for (int k = 0; k < VG_SOCK_MATCH; k++)
		if (k < CFG.sel[si].nmatch && !vg_sk_field(&CFG.sel[si].m[k], h->sa, proto))
			return 0;
	return vg_sk_binary(h, si, tgid);
}

static __always_inline void vg_sk_post(struct vg_sk_buf *h, int si, __u8 action, __u8 flags)
{
	struct vg_generic_msg *m = &h->msg;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 size = sizeof(*m);

	__builtin_memset(m, 0, sizeof(*m));
	m->hdr.op = VG_MSG_GENERIC_KPROBE;
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->pid = id >> 32;
	m->tid = (__u32)id;
	m->hook_id = CFG.hook_id;
	m->selector = si;
	m->action = action;
	m->flags = flags;
	if (CFG.has_sockaddr) {
		m->nargs = 1;
		m->arg_len[0] = VG_SA_LEN;
		m->orig_len[0] = VG_SA_LEN;
		size += sizeof(h->sa);
	}
	m->hdr.size = size;
	vg_send(h, size);
}

/* 1: let the call go on; 0: refuse it (errno from bpf_set_retval, EPERM otherwise). */
static __always_inline int vg_sk_run(struct bpf_sock_addr *ctx, int v6)
{
	__u32 zero = 0, proto, tgid;
	struct vg_sk_buf *h = bpf_map_lookup_elem(&vg_sk_heap, &zero);
	int si;

	if (!h || !vg_pf_allowed()) /* pod-scoped policy, task outside its pods */
		return 1;
	vg_sk_addr_of(ctx, v6, h->sa);
	proto = ctx->protocol;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (!CFG.nsel) {
		vg_sk_post(h, 0, VG_ACT_POST, 0);
		return 1;
	}
	for (si = 0; si < VG_SOCK_SELECTORS; si++) {
		if (si >= CFG.nsel)
			return 1;
		if (!vg_pf_sel_allowed(si) || !vg_sk_selector(h, si, proto, tgid))
			continue;
		if (CFG.sel[si].action == VG_ACT_OVERRIDE && CFG.monitor) {
			if (CFG.sel[si].post)
				vg_sk_post(h, si, VG_ACT_OVERRIDE, VG_GENF_MONITOR);
			return 1;
		}
		if (CFG.sel[si].post)
			vg_sk_post(h, si, CFG.sel[si].action, 0);
		if (CFG.sel[si].action == VG_ACT_OVERRIDE) {
			if (CFG.sel[si].err > 0) {
				/* a positive Override value: the call ends with it, not an errno
				 * (the kernel would turn a refusal with it into EPERM) */
				bpf_set_retval(CFG.sel[si].err);
				return 1;
			}
			if (CFG.sel[si].err)
				bpf_set_retval(CFG.sel[si].err);
			return 0;
		}
		return 1;
	}
	return 1;
}

SEC("cgroup/connect4")
int vg_sk_connect4(struct bpf_sock_addr *ctx)
{
	return vg_sk_run(ctx, 0);
}

SEC("cgroup/connect6")
int vg_sk_connect6(struct bpf_sock_addr *ctx)
{
	return vg_sk_run(ctx, 1);
}

SEC("cgroup/bind4")
int vg_sk_bind4(struct bpf_sock_addr *ctx)
{
	return vg_sk_run(ctx, 0);
}

SEC("cgroup/bind6")
int vg_sk_bind6(struct bpf_sock_addr *ctx)
{
	return vg_sk_run(ctx, 1);
}

SEC("cgroup/sendmsg4")
int vg_sk_sendmsg4(struct bpf_sock_addr *ctx)
{
	return vg_sk_run(ctx, 0);
}

SEC("cgroup/sendmsg6")
int vg_sk_sendmsg6(struct bpf_sock_addr *ctx)
{
	return vg_sk_run(ctx, 1);
}
