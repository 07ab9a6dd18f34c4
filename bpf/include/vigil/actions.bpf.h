/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * actions.bpf.h - policy actions that keep state between hooks or add to the record:
 *
 * - TrackSock / UntrackSock: vg_socktrack maps a struct sock * to the process that
 *   created or used it. A hook with a sock argument whose socket is tracked reports the
 *   tracked owner as the event's process (VG_GENF_SOCK_OWNER), so hooks that run outside
 *   process context (softirq network paths) name the owning process, as Tetragon does.
 *   The map is shared by all hooks of one policy (the loader passes the first hook's fd).
 * - NotifyEnforcer: vg_enforcer holds (error, signal) for the calling thread; the
 *   policy's enforcer program (enforcer.bpf.c) acts on it at the thread's syscall.
 *   CleanupEnforcerNotification deletes the thread's entry: a notification not yet acted
 *   on is withdrawn.
 * - kernelStackTrace / userStackTrace: return addresses copied into the record's tail
 *   with bpf_get_stack (no stack-id map: a record carries its own stack, so nothing can
 *   evict it before user space reads it); user space symbolizes them.
 * - imaHash (BPF LSM): bpf_ima_file_hash needs a sleepable program, and the hook's
 *   pipeline reads maps a sleepable program may not (LPM tries), so a second program
 *   of the hook, vg_gen_lsm_ima (lsm.s), hashes the file argument into vg_ima (key:
 *   pid_tgid) and vg_gen_lsm appends it to the record it posts. The loader attaches
 *   vg_gen_lsm_ima last: a trampoline runs the newest program first.
 *
 * Included by generic.bpf.c after its configuration (CFG) and scratch buffer.
 */
#ifndef VIGIL_ACTIONS_BPF_H
#define VIGIL_ACTIONS_BPF_H

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VG_SOCKTRACK_ENTRIES);
	__type(key, __u64);
	__type(value, struct vg_sock_owner);
} vg_socktrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VG_ENFORCER_ENTRIES);
	__type(key, __u64);
	__type(value, struct vg_enforcer_note);
} vg_enforcer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, VG_IMA_ENTRIES);
	__type(key, __u64);
	__type(value, struct vg_ima_rec);
} vg_ima SEC(".maps");

#define VG_STACK_BYTES (VG_STACK_DEPTH * 8)

static __always_inline void vg_sock_track(__u8 action, __u64 sk)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vg_sock_owner o = {.pid = id >> 32, .tid = (__u32)id};

	if (!sk)
		return;
	if (action == VG_ACT_TRACKSOCK)
		bpf_map_update_elem(&vg_socktrack, &sk, &o, BPF_ANY);
	else
		bpf_map_delete_elem(&vg_socktrack, &sk);
}

/* The event's process: the tracked owner of its first sock argument, if any. */
static __always_inline void vg_sock_owner_apply(struct vg_generic_msg *m, __u64 *raw)
{
	for (int i = 0; i < VG_GEN_ARGS; i++) {
		if (i < CFG.nargs && CFG.args[i].kind == VG_ARG_SOCK &&
		    !(CFG.args[i].flags & VG_ARGF_SOCKET)) {
			__u64 sk = raw[i];
			struct vg_sock_owner *o = bpf_map_lookup_elem(&vg_socktrack, &sk);

			if (o) {
				m->pid = o->pid;
				m->tid = o->tid;
				m->flags |= VG_GENF_SOCK_OWNER;
			}
			return;
		}
	}
}

static __always_inline void vg_notify_enforcer(__u32 error, __u32 sig)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vg_enforcer_note n = {.error = (__s32)error, .sig = sig, .hook_id = CFG.hook_id};

	bpf_map_update_elem(&vg_enforcer, &id, &n, BPF_ANY);
}

static __always_inline void vg_enforcer_cleanup(void)
{
	__u64 id = bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&vg_enforcer, &id);
}

/*
 * Append the requested stacks to the record (whose tail ends at `off`); returns the new
 * end. A stack that does not fit is left out (its flag stays clear).
 */
static __always_inline __u32 vg_stacks(void *ctx, struct vg_gen_buf *h, __u32 off, __u8 want)
{
	struct vg_generic_msg *m = &h->msg;
	long n;

	if (want & VG_ACTF_KSTACK) {
		__u32 o = off;

		if (o <= VG_GEN_DATA_MAX - VG_STACK_BYTES) {
			n = bpf_get_stack(ctx, &h->data[o], VG_STACK_BYTES, 0);
			if (n > 0) {
				m->kstack_off = o;
				m->kstack_len = n;
				m->flags |= VG_GENF_KSTACK;
				off = o + ((n + 7) & ~7);
			}
		}
	}
	if (want & VG_ACTF_USTACK) {
		__u32 o = off;

		if (o <= VG_GEN_DATA_MAX - VG_STACK_BYTES) {
			n = bpf_get_stack(ctx, &h->data[o], VG_STACK_BYTES, BPF_F_USER_STACK);
			if (n > 0) {
				m->ustack_off = o;
				m->ustack_len = n;
				m->flags |= VG_GENF_USTACK;
				off = o + ((n + 7) & ~7);
			}
		}
	}
	return off;
}

/* Append the hash vg_gen_lsm_ima computed for this call (consumed); returns the new end. */
static __always_inline __u32 vg_ima_append(struct vg_gen_buf *h, __u32 off)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vg_ima_rec *r = bpf_map_lookup_elem(&vg_ima, &id);
	__u32 o = off;

	if (!r)
		return off;
	if (o <= VG_GEN_DATA_MAX - sizeof(*r)) {
		__builtin_memcpy(&h->data[o], r, sizeof(*r));
		h->msg.ima_off = o;
		h->msg.ima_len = sizeof(*r);
		h->msg.flags |= VG_GENF_IMA;
		off = o + sizeof(*r);
	}
	bpf_map_delete_elem(&vg_ima, &id);
	return off;
}

/* The hook's argument `ima_arg` as the typed pointer the hook passes (a constant context
 * slot per case: the verifier knows the slot's BTF type). */
static __always_inline struct file *vg_ima_file(__u64 *ctx)
{
	__u8 i = CFG.ima_arg;
	__u64 v = 0;

	if (i >= VG_GEN_ARGS)
		return 0;
	switch (CFG.args[i].src) {
	case 0: v = ctx[0]; break;
	case 1: v = ctx[1]; break;
	case 2: v = ctx[2]; break;
	case 3: v = ctx[3]; break;
	case 4: v = ctx[4]; break;
	default: return 0;
	}
	if (CFG.args[i].kind == VG_ARG_BINPRM)
		return ((struct linux_binprm *)v)->file;
	return (struct file *)v;
}

SEC("lsm.s")
int vg_gen_lsm_ima(__u64 *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct vg_ima_rec r = {};
	struct file *f = vg_ima_file(ctx);
	long algo;

	if (!f)
		return 0;
	algo = bpf_ima_file_hash(f, r.digest, sizeof(r.digest));
	if (algo < 0)
		return 0;
	r.algo = algo;
	bpf_map_update_elem(&vg_ima, &id, &r, BPF_ANY);
	return 0;
}

#endif /* VIGIL_ACTIONS_BPF_H */
