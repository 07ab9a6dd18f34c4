// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * open_storm.bpf.c - test-only sensor for tests/e2e/test_flood.py: one record per
 * openat(2) from the cgroups listed in tst_attempts, sent through vg_send() with the
 * base sensor's ring and rate maps (shared by fd), so --cgroup-rate applies to it as
 * to any policy sensor. tst_attempts counts every attempt independently of vg_stats,
 * which is what the test balances against records received + records throttled.
 */
#include "vigil/common.bpf.h"

struct tst_open_msg {
	struct vg_msg_hdr hdr;
	__u64 cgroup_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u64);   /* cgroup id */
	__type(value, __u64); /* openat calls seen */
} tst_attempts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int tst_open(void *ctx)
{
	__u64 cgid = bpf_get_current_cgroup_id();
	__u64 *n = bpf_map_lookup_elem(&tst_attempts, &cgid);
	struct tst_open_msg msg = {};

	if (!n)
		return 0;
	__sync_fetch_and_add(n, 1);
	msg.hdr.op = VG_MSG_GENERIC_TRACEPOINT;
	msg.hdr.size = sizeof(msg);
	msg.hdr.ktime = bpf_ktime_get_boot_ns();
	msg.cgroup_id = cgid;
	return vg_send(&msg, sizeof(msg));
}
