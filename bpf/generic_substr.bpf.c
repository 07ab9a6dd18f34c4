// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * generic_substr.bpf.c - a hook of a tracing policy with a SubString filter: generic.bpf.c
 * calling the kernel function bpf_strnstr (Linux 6.17 or later).
 *
 * libbpf resolves every kernel function an object calls when it loads the object, dead
 * code or not, so a call the kernel lacks fails the load of the whole object. The call
 * lives in this variant only, loaded for the hooks that use it (HookPlan.kfuncs) on the
 * kernels the compiler found it in; every other hook loads generic*.bpf.o without it.
 * All entry programs but USDT's are here (a tracepoint hook autoloads only its own).
 */
#define VG_GEN_SUBSTR 1
#include "generic.bpf.c"
