/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * path.bpf.h - resolve a struct path to a string without bpf_d_path (refused outside
 * LSM/fentry, and on kernels without trampolines): a bounded walk up the dentries,
 * crossing mounts, stopping at the task's root like d_path. Components are prepended
 * into the end of a VG_PATH_REGION buffer, so the result is a forward path.
 *
 * VG_DEFINE_PATH_WALK(fn, heap, type, field) defines fn(...) writing into
 * `((type *)lookup(heap))->field`, a char[VG_PATH_REGION]; the bpf_loop callback
 * re-looks the heap up (pointers to map values cannot travel through the loop ctx).
 */
#ifndef VIGIL_PATH_BPF_H
#define VIGIL_PATH_BPF_H

#define VG_PATH_REGION (VG_PATH_MAX + VG_NAME_MAX)

struct vg_path_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	struct dentry *root_dentry;
	struct vfsmount *root_mnt;
	__u32 pos;   /* start of the path in the region; VG_PATH_MAX = empty ("/") */
	__u32 done;  /* 1: reached a root; 0 after the loop: too deep or too long */
};

#define VG_DEFINE_PATH_WALK(fn, heap, type, field)                                       \
static long fn##_step(__u32 i, void *data)                                              \
{                                                                                           \
	struct vg_path_walk *w = data;                                                      \
	struct dentry *dentry = w->dentry, *parent, *mnt_root;                              \
	struct vfsmount *vfsmnt = w->vfsmnt;                                                \
	struct mount *mnt = w->mnt;                                                         \
	const unsigned char *nm;                                                            \
	__u32 zero = 0, len;                                                                \
	type *h;                                                                            \
                                                                                            \
	if (dentry == w->root_dentry && vfsmnt == w->root_mnt)                              \
		goto done;                                                                  \
	mnt_root = BPF_CORE_READ(vfsmnt, mnt_root);                                         \
	parent = BPF_CORE_READ(dentry, d_parent);                                           \
	if (dentry == mnt_root || dentry == parent) {                                       \
		struct mount *mparent = BPF_CORE_READ(mnt, mnt_parent);                     \
		if (dentry != mnt_root || mnt == mparent)                                   \
			goto done;                                                          \
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);                             \
		w->mnt = mparent;                                                           \
		w->vfsmnt = &mparent->mnt;                                                  \
		return 0;                                                                   \
	}                                                                                   \
	len = BPF_CORE_READ(dentry, d_name.len);                                            \
	if (len >= VG_NAME_MAX || w->pos < len + 1 + VG_NAME_MAX)                           \
		return 1; /* too long: leave what we have */                                \
	h = bpf_map_lookup_elem(&heap, &zero);                                              \
	if (!h)                                                                             \
		goto done;                                                                  \
	nm = BPF_CORE_READ(dentry, d_name.name);                                            \
	w->pos -= len;                                                                      \
	if (bpf_probe_read_kernel(&h->field[w->pos & (VG_PATH_MAX - 1)],                    \
				  len & (VG_NAME_MAX - 1), nm))                             \
		goto done;                                                                  \
	w->pos -= 1;                                                                        \
	h->field[w->pos & (VG_PATH_MAX - 1)] = '/';                                         \
	w->dentry = parent;                                                                 \
	return 0;                                                                           \
done:                                                                                       \
	w->done = 1;                                                                        \
	return 1;                                                                           \
}                                                                                           \
                                                                                            \
/* Resolve `p` into the region; return the start offset (VG_PATH_MAX: "/"). */         \
static __always_inline __u32 fn(struct path *p, struct path *root, __u32 *truncated)     \
{                                                                                           \
	struct vg_path_walk w = {                                                           \
		.dentry = BPF_CORE_READ(p, dentry),                                         \
		.vfsmnt = BPF_CORE_READ(p, mnt),                                            \
		.root_dentry = BPF_CORE_READ(root, dentry),                                 \
		.root_mnt = BPF_CORE_READ(root, mnt),                                       \
		.pos = VG_PATH_MAX,                                                      \
	};                                                                                  \
	struct vfsmount *vm = w.vfsmnt;                                                     \
                                                                                            \
	w.mnt = vg_container_of(vm, struct mount, mnt);                                     \
	bpf_loop(VG_PATH_DEPTH, fn##_step, &w, 0);                                        \
	if (!w.done)                                                                        \
		*truncated = 1;                                                             \
	return w.pos;                                                                       \
}

#endif /* VIGIL_PATH_BPF_H */
