/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * common.bpf.h - maps and helpers every Vigil BPF object shares: the event ring
 * buffer, the per-CPU counters, the load-time config, the per-cgroup rate state and a
 * counted, throttled send.
 */
#ifndef VIGIL_COMMON_BPF_H
#define VIGIL_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "vigil/abi.h"

/* container_of with a CO-RE relocated offset (the kernel may lay `type` out differently) */
#define vg_container_of(ptr, type, member) \
	((type *)((void *)(ptr) - bpf_core_field_offset(type, member)))

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct vg_config vg_cfg = {};

/* Size is set by the loader (--rb-size-total); every object shares one ring by fd. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} vg_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct vg_stats);
} vg_stats SEC(".maps");

/*
 * --cgroup-rate state per cgroup id. Created by the base sensor and shared by fd with
 * every other object, so one cgroup has one budget whatever sensors its records come
 * from. LRU: a host with more cgroups than entries forgets the least recently active
 * (they start counting again from zero). Resized to 1 entry when throttling is off.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VG_CGROUP_RATE_ENTRIES);
	__type(key, __u64);
	__type(value, struct vg_cgroup_rate);
} vg_cgroup_rate SEC(".maps");

static __always_inline struct vg_stats *vg_stats_get(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&vg_stats, &zero);
}

static __always_inline void vg_count_drop(__u8 op, __u32 reason)
{
	struct vg_stats *st = vg_stats_get();

	if (st)
		st->drops[((op & (VG_MSG_OP_MAX - 1)) * VG_DROP_REASON_MAX + reason) &
			  (VG_MSG_OP_MAX * VG_DROP_REASON_MAX - 1)]++;
}

/*
 * Wake the consumer only when enough data is pending: a wake-up per record costs
 * the consumer about 3 us each, far more than the record itself. The consumer also
 * polls with a short timeout, so a quiet ring is still drained.
 */
static __always_inline __u64 vg_wakeup_flags(void)
{
	if (!vg_cfg.wakeup_bytes)
		return 0;
	if (bpf_ringbuf_query(&vg_events, BPF_RB_AVAIL_DATA) >= vg_cfg.wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void vg_count_sent(__u8 op)
{
	struct vg_stats *st = vg_stats_get();

	if (st)
		st->sent[op & (VG_MSG_OP_MAX - 1)]++;
}

/*
 * Send a THROTTLE record (reserved in place: it is larger than the stack allows next to
 * the callers' own records). START carries the current task's cgroup name. Returns 0
 * when the record is in the ring.
 */
static __always_inline int vg_throttle_emit(__u64 cgid, __u32 type, __u64 dropped)
{
	struct vg_throttle_msg *m;
#ifndef VG_NO_TASK_HELPERS
	struct task_struct *task;
	const char *name;
	long n;
#endif

	m = bpf_ringbuf_reserve(&vg_events, sizeof(*m), 0);
	if (!m) {
		vg_count_drop(VG_MSG_THROTTLE, VG_DROP_RINGBUF_FULL);
		return -1;
	}
	__builtin_memset(m, 0, sizeof(*m));
	m->hdr.op = VG_MSG_THROTTLE;
	m->hdr.size = sizeof(*m);
	m->hdr.ktime = bpf_ktime_get_boot_ns();
	m->cgroup_id = cgid;
	m->type = type;
	m->dropped = dropped;
#ifndef VG_NO_TASK_HELPERS
	/* Program types without bpf_get_current_task (e.g. cgroup hooks on older kernels)
	 * define VG_NO_TASK_HELPERS: their START has no name, user space resolves the id. */
	if (type == VG_THROTTLE_START) {
		task = (struct task_struct *)bpf_get_current_task();
		name = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, name);
		n = name ? bpf_probe_read_kernel_str(m->name, sizeof(m->name), name) : 0;
		m->name_len = n > 0 ? n - 1 : 0;
	}
#endif
	bpf_ringbuf_submit(m, BPF_RB_FORCE_WAKEUP);
	vg_count_sent(VG_MSG_THROTTLE);
	return 0;
}

enum vg_rate_verdict {
	VG_RATE_PASS = 0,
	VG_RATE_DROP = 1, /* throttled: do not send, count as VG_DROP_THROTTLED */
	VG_RATE_MARK = 2, /* throttled exit: send with VG_HDR_THROTTLED */
};

/* The current cgroup's rate state, created on its first record (NULL if the map is full). */
static __always_inline struct vg_cgroup_rate *vg_rate_get(__u64 cgid, __u64 now)
{
	struct vg_cgroup_rate *r = bpf_map_lookup_elem(&vg_cgroup_rate, &cgid);
	struct vg_cgroup_rate fresh = { .window_start = now };

	if (r)
		return r;
	bpf_map_update_elem(&vg_cgroup_rate, &cgid, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&vg_cgroup_rate, &cgid);
}

/*
 * --cgroup-rate: count the record against its cgroup's window (fixed windows of
 * cgroup_rate_interval_ns, all CPUs together) and say what to do with it. Clones are
 * neither counted nor suppressed (the process cache needs every fork, and they are
 * never exported); exits and credential changes are counted and always sent, marked
 * while throttled (the cache needs them, user space exports no event for a marked one);
 * everything else is
 * suppressed while the cgroup is throttled. The record that crosses the limit sends
 * THROTTLE_START; vg_rate_sweep sends THROTTLE_STOP. Races between CPUs at a window
 * boundary may miscount a record or two; START is sent exactly once per episode (CAS),
 * and if the ring has no room for it, the episode is undone and retried.
 */
static __always_inline int vg_rate_check(__u8 op)
{
	struct vg_cgroup_rate *r;
	__u64 cgid, now, cnt;

	if (!vg_cfg.cgroup_rate || op == VG_MSG_CLONE || op == VG_MSG_THROTTLE)
		return VG_RATE_PASS;
	cgid = bpf_get_current_cgroup_id();
	now = bpf_ktime_get_boot_ns();
	r = vg_rate_get(cgid, now);
	if (!r)
		return VG_RATE_PASS; /* fail open: never lose records to our own bookkeeping */
	/* signed: another CPU may have moved window_start past our `now` */
	if ((__s64)(now - r->window_start) >= (__s64)vg_cfg.cgroup_rate_interval_ns) {
		r->window_start = now;
		r->count = 0;
	}
	cnt = __sync_fetch_and_add(&r->count, 1) + 1;
	if (cnt > vg_cfg.cgroup_rate) {
		r->last_over = now;
		if (!r->throttled && __sync_val_compare_and_swap(&r->throttled, 0, 1) == 0 &&
		    vg_throttle_emit(cgid, VG_THROTTLE_START, 0))
			r->throttled = 0; /* START not delivered: retry with the next record */
	}
	if (!r->throttled)
		return VG_RATE_PASS;
	if (op == VG_MSG_EXIT || op == VG_MSG_CREDS)
		return VG_RATE_MARK;
	__sync_fetch_and_add(&r->dropped, 1);
	return VG_RATE_DROP;
}

/*
 * Copy one record into the ring; count it as sent, or as dropped (ring full, or its
 * cgroup throttled). Every record of every Vigil object goes through here.
 */
static __always_inline int vg_send(void *msg, __u32 size)
{
	struct vg_msg_hdr *hdr = msg;
	__u8 op = hdr->op;
	int verdict;
	long err;

	verdict = vg_rate_check(op);
	if (verdict == VG_RATE_DROP) {
		vg_count_drop(op, VG_DROP_THROTTLED);
		return 0;
	}
	if (verdict == VG_RATE_MARK)
		hdr->flags |= VG_HDR_THROTTLED;
	err = bpf_ringbuf_output(&vg_events, msg, size, vg_wakeup_flags());
	if (err) {
		vg_count_drop(op, VG_DROP_RINGBUF_FULL);
		return 0;
	}
	vg_count_sent(op);
	return 0;
}

struct vg_sweep_ctx {
	__u64 now;
	__u32 stopped;
};

/* One cgroup of the sweep: STOP it when nothing went over the limit for the quiet period. */
static long vg_sweep_one(struct bpf_map *map, __u64 *cgid, struct vg_cgroup_rate *r,
			 struct vg_sweep_ctx *ctx)
{
	__u64 dropped;

	/* signed: a CPU still over the limit may have set last_over after ctx->now */
	if (!r->throttled || (__s64)(ctx->now - r->last_over) < (__s64)vg_cfg.cgroup_rate_quiet_ns)
		return 0;
	if (__sync_val_compare_and_swap(&r->throttled, 1, 0) != 1)
		return 0;
	dropped = __sync_lock_test_and_set(&r->dropped, 0);
	if (vg_throttle_emit(*cgid, VG_THROTTLE_STOP, dropped)) {
		__sync_fetch_and_add(&r->dropped, dropped); /* ring full: next sweep retries */
		r->throttled = 1;
		return 0;
	}
	ctx->stopped++;
	return 0;
}

/*
 * Not attached: the base sensor runs it with BPF_PROG_TEST_RUN about once a second, so
 * THROTTLE_STOP is decided atomically next to the counters and reaches user space
 * through the ring, in order with everything else. Returns the cgroups stopped.
 */
static __always_inline int vg_throttle_sweep_all(void)
{
	struct vg_sweep_ctx ctx = { .now = bpf_ktime_get_boot_ns() };

	if (!vg_cfg.cgroup_rate)
		return 0;
	bpf_for_each_map_elem(&vg_cgroup_rate, vg_sweep_one, &ctx, 0);
	return ctx.stopped;
}

#endif /* VIGIL_COMMON_BPF_H */
