/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * procs.bpf.h - vg_procs: each live process's binary, for matchBinaries. The base
 * sensor creates and maintains it (exec writes, fork copies, exit deletes; user space
 * seeds the processes found by the /proc scan); policy objects share it by fd.
 */
#ifndef VIGIL_PROCS_BPF_H
#define VIGIL_PROCS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VG_PROCS_ENTRIES);
	__type(key, __u32);
	__type(value, struct vg_proc);
} vg_procs SEC(".maps");

#endif /* VIGIL_PROCS_BPF_H */
