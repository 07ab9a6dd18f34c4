/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * policyfilter.bpf.h - pod scoping of a tracing policy's hooks. A hook whose
 * .rodata.pf names a policy id runs only when the current task's cgroup is listed for
 * that policy in vg_pf_cgroups; user space (vigil.sensors.policyfilter, fed by
 * vigil.k8s) adds a pod's container cgroups when the pod starts matching and removes
 * them when it stops. An unscoped hook (policy_id 0) runs for every task. A selector
 * with matchWorkloads has its own filter id (sel_ids), checked the same way. A filter
 * with hostSelector {} also passes host processes: tasks whose cgroup is in no pod,
 * i.e. not listed under host_id (every pod's cgroups, kept by the same user space).
 *
 * On cgroup v1 hosts the pods' cgroups live in the v1 hierarchies (the v2 one can be
 * empty), so the id is read from the configured subsystem's hierarchy:
 * task->cgroups->subsys[subsys]->cgroup->kn->id, the same kernfs id a stat() of the
 * cgroup directory reports as its inode number.
 */
#ifndef VIGIL_POLICYFILTER_BPF_H
#define VIGIL_POLICYFILTER_BPF_H

const volatile struct vg_pf_cfg vg_pf SEC(".rodata.pf") = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, VG_PF_ENTRIES);
	__type(key, struct vg_pf_key);
	__type(value, __u8);
} vg_pf_cgroups SEC(".maps");

static __always_inline __u64 vg_pf_cgroup_id(void)
{
	struct task_struct *task;
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cset;
	__s32 idx = vg_pf.subsys;

	if (idx < 0)
		return bpf_get_current_cgroup_id();
	task = (struct task_struct *)bpf_get_current_task();
	cset = BPF_CORE_READ(task, cgroups);
	if (!cset || idx >= bpf_core_field_size(cset->subsys) / sizeof(void *))
		return 0;
	bpf_core_read(&css, sizeof(css), &cset->subsys[idx & 15]);
	if (!css)
		return 0;
	return BPF_CORE_READ(css, cgroup, kn, id);
}

/* Is the task's cgroup listed under filter id ``id``? */
static __always_inline int vg_pf_listed(__u64 cgid, __u32 id)
{
	struct vg_pf_key key = {};

	key.cgroup_id = cgid;
	key.policy_id = id;
	return bpf_map_lookup_elem(&vg_pf_cgroups, &key) != NULL;
}

/* A workload filter: the task's cgroup is under ``id`` (0: no pods selected), or the
 * filter takes host processes (bit ``bit`` of host_mask) and the cgroup is no pod's. */
static __always_inline int vg_pf_in(__u32 id, int bit)
{
	int host = (vg_pf.host_mask >> bit) & 1;
	__u64 cgid;

	if (!id && !host)
		return 1;
	cgid = vg_pf_cgroup_id();
	if (id && vg_pf_listed(cgid, id))
		return 1;
	return host && !vg_pf_listed(cgid, vg_pf.host_id);
}

/* Whether this hook may run for the current task. */
static __always_inline int vg_pf_allowed(void)
{
	return vg_pf_in(vg_pf.policy_id, VG_GEN_SELECTORS);
}

/* matchWorkloads of selector si: whether the current task is in one of its workloads
 * (the selector's own filter id, and host processes with hostSelector {}; neither:
 * every task). */
static __always_inline int vg_pf_sel_allowed(int si)
{
	if (si < 0 || si >= VG_GEN_SELECTORS)
		return 1;
	return vg_pf_in(vg_pf.sel_ids[si], si);
}

#endif /* VIGIL_POLICYFILTER_BPF_H */
