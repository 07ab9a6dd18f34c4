// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * generic_substr_icase.bpf.c - a hook of a tracing policy with a SubStringIgnCase filter:
 * generic_substr.bpf.c also calling bpf_strncasestr (Linux 6.19 or later), so it loads only
 * where the kernel has both functions (see generic_substr.bpf.c).
 */
#define VG_GEN_SUBSTR 2
#include "generic.bpf.c"
