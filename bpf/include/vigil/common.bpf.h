/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * common.bpf.h - maps and helpers every Vigil BPF object shares: the event ring
 * buffer, the per-CPU counters, the load-time config and a counted send.
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

/* Copy one record into the ring; count it as sent or as dropped (ring full). */
static __always_inline int vg_send(void *msg, __u32 size)
{
	__u8 op = ((struct vg_msg_hdr *)msg)->op;
	struct vg_stats *st;
	long err;

	err = bpf_ringbuf_output(&vg_events, msg, size, vg_wakeup_flags());
	if (err) {
		vg_count_drop(op, VG_DROP_RINGBUF_FULL);
		return 0;
	}
	st = vg_stats_get();
	if (st)
		st->sent[op & (VG_MSG_OP_MAX - 1)]++;
	return 0;
}

#endif /* VIGIL_COMMON_BPF_H */
