// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * generic_usdt_substr_icase.bpf.c - a USDT hook with a SubStringIgnCase filter:
 * generic_usdt_substr.bpf.c also calling bpf_strncasestr (Linux 6.19 or later).
 */
#define VG_GEN_SUBSTR 2
#include "generic_usdt.bpf.c"
