/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * policyfilter.bpf.h - pod scoping of a tracing policy's hooks. A hook whose
 * .rodata.pf names a policy id runs only when the current task's cgroup is listed for
 * that policy in vg_pf_cgroups; user space (vigil.sensors.policyfilter, fed by
 * vigil.k8s) adds a pod's container cgroups when the pod starts matching and removes
 * them when it stops. An unscoped hook (policy_id 0) runs for every task. A selector
 * with matchWorkloads has its own filter id (sel_ids), checked the same way.
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

/* Whether this hook may run for the current task. */
static __always_inline int vg_pf_allowed(void)
{
	struct vg_pf_key key = {};

	if (!vg_pf.policy_id)
		return 1;
	key.cgroup_id = vg_pf_cgroup_id();
	key.policy_id = vg_pf.policy_id;
	return bpf_map_lookup_elem(&vg_pf_cgroups, &key) != NULL;
}

/* matchWorkloads of selector si: whether the current task is in one of its workloads
 * (the selector's own filter id; none: every task). */
static __always_inline int vg_pf_sel_allowed(int si)
{
	struct vg_pf_key key = {};

	if (si < 0 || si >= VG_GEN_SELECTORS || !vg_pf.sel_ids[si])
		return 1;
	key.cgroup_id = vg_pf_cgroup_id();
	key.policy_id = vg_pf.sel_ids[si];
	return bpf_map_lookup_elem(&vg_pf_cgroups, &key) != NULL;
}

#endif /* VIGIL_POLICYFILTER_BPF_H */
