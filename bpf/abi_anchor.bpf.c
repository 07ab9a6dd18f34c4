// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * abi_anchor.bpf.c - never loaded. One global of every type in abi.h, so the object's
 * BTF describes all of them; tools/gen_abi.py generates src/vigil/abi/_generated.py
 * from it and tests/unit/test_abi.py checks every shipped object against that.
 */
#include "vmlinux.h"
#include "vigil/abi.h"

#define ANCHOR(type, name) type name __attribute__((used))

ANCHOR(struct vg_msg_hdr, vg_anchor_hdr);
ANCHOR(struct vg_creds, vg_anchor_creds);
ANCHOR(struct vg_namespaces, vg_anchor_ns);
ANCHOR(struct vg_host_ns, vg_anchor_host_ns);
ANCHOR(enum vg_host_ns_flag, vg_anchor_host_ns_flag);
ANCHOR(struct vg_exec_msg, vg_anchor_exec);
ANCHOR(struct vg_clone_msg, vg_anchor_clone);
ANCHOR(struct vg_exit_msg, vg_anchor_exit);
ANCHOR(struct vg_throttle_msg, vg_anchor_throttle);
ANCHOR(struct vg_creds_msg, vg_anchor_creds_msg);
ANCHOR(enum vg_cred_call, vg_anchor_cred_call);
ANCHOR(enum vg_cred_limits, vg_anchor_cred_limits);
ANCHOR(struct vg_cgroup_rate, vg_anchor_cgroup_rate);
ANCHOR(struct vg_stats, vg_anchor_stats);
ANCHOR(struct vg_config, vg_anchor_config);
ANCHOR(enum vg_msg_op, vg_anchor_op);
ANCHOR(enum vg_limits, vg_anchor_limits);
ANCHOR(enum vg_exec_flag, vg_anchor_flag);
ANCHOR(enum vg_drop_reason, vg_anchor_drop);
ANCHOR(enum vg_hdr_flag, vg_anchor_hdr_flag);
ANCHOR(enum vg_throttle_type, vg_anchor_throttle_type);
ANCHOR(struct vg_hook_cfg, vg_anchor_hook_cfg);
ANCHOR(struct vg_hook_mode, vg_anchor_hook_mode);
ANCHOR(struct vg_generic_msg, vg_anchor_generic);
ANCHOR(struct vg_proc, vg_anchor_proc);
ANCHOR(enum vg_gen_limits, vg_anchor_gen_limits);
ANCHOR(enum vg_hook_kind, vg_anchor_hook_kind);
ANCHOR(enum vg_arg_kind, vg_anchor_arg_kind);
ANCHOR(enum vg_arg_flag, vg_anchor_arg_flag);
ANCHOR(enum vg_op, vg_anchor_op2);
ANCHOR(enum vg_action, vg_anchor_action);
ANCHOR(enum vg_rate_scope, vg_anchor_rate_scope);
ANCHOR(enum vg_gen_flag, vg_anchor_gen_flag);
ANCHOR(enum vg_hook_flag, vg_anchor_hook_flag);
ANCHOR(enum vg_res_limits, vg_anchor_res_limits);
ANCHOR(enum vg_follow_flag, vg_anchor_follow_flag);
ANCHOR(enum vg_gen_count, vg_anchor_gen_count);
ANCHOR(enum vg_cel_limits, vg_anchor_cel_limits);
ANCHOR(enum vg_cel_op, vg_anchor_cel_op);
ANCHOR(struct vg_gen_counts, vg_anchor_gen_counts);
ANCHOR(struct vg_sock_rec, vg_anchor_sock_rec);
ANCHOR(struct vg_skb_rec, vg_anchor_skb_rec);
ANCHOR(struct vg_bpf_rec, vg_anchor_bpf_rec);
ANCHOR(struct vg_module_rec, vg_anchor_module_rec);
ANCHOR(struct vg_userns_rec, vg_anchor_userns_rec);
ANCHOR(struct vg_perf_rec, vg_anchor_perf_rec);
ANCHOR(enum vg_perf_limits, vg_anchor_perf_limits);
ANCHOR(enum vg_proc_flag, vg_anchor_proc_flag);
ANCHOR(enum vg_data_limits, vg_anchor_data_limits);
ANCHOR(struct vg_data_msg, vg_anchor_data_msg);
ANCHOR(enum vg_sock_limits, vg_anchor_sock_limits);
ANCHOR(enum vg_sock_field, vg_anchor_sock_field);
ANCHOR(struct vg_sock_cfg, vg_anchor_sock_cfg);
ANCHOR(struct vg_eq_key, vg_anchor_eq_key);
ANCHOR(struct vg_pfx_key, vg_anchor_pfx_key);
ANCHOR(struct vg_sub_key, vg_anchor_sub_key);
ANCHOR(struct vg_int_key, vg_anchor_int_key);
ANCHOR(struct vg_addr_key, vg_anchor_addr_key);
ANCHOR(enum vg_action_flag, vg_anchor_action_flag);
ANCHOR(enum vg_stack_limits, vg_anchor_stack_limits);
ANCHOR(struct vg_sock_owner, vg_anchor_sock_owner);
ANCHOR(struct vg_enforcer_note, vg_anchor_enforcer_note);
ANCHOR(enum vg_enf_count, vg_anchor_enf_count);
ANCHOR(struct vg_ima_rec, vg_anchor_ima_rec);
ANCHOR(struct vg_loader_msg, vg_anchor_loader_msg);
ANCHOR(enum vg_loader_flag, vg_anchor_loader_flag);
ANCHOR(enum vg_pf_limits, vg_anchor_pf_limits);
ANCHOR(struct vg_pf_key, vg_anchor_pf_key);
ANCHOR(struct vg_pf_cfg, vg_anchor_pf_cfg);

char LICENSE[] __attribute__((section("license"), used)) = "Dual BSD/GPL";
