// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* A program the verifier must refuse: it reads a map value without a NULL check. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} vg_refused_map SEC(".maps");

SEC("tp_btf/sched_process_exec")
int vg_refused(void *ctx)
{
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&vg_refused_map, &zero);

	return *v; /* no NULL check */
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
