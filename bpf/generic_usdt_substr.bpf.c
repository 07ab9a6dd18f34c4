// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * generic_usdt_substr.bpf.c - a USDT hook with a SubString filter: generic_usdt.bpf.c
 * calling the kernel function bpf_strnstr (Linux 6.17 or later); see generic_substr.bpf.c
 * for why the call lives in a variant of its own.
 */
#define VG_GEN_SUBSTR 1
#include "generic_usdt.bpf.c"
