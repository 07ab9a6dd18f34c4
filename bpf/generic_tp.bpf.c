// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * generic_tp.bpf.c - one tracepoint or raw-tracepoint hook of one tracing policy:
 * generic.bpf.c with only those entry programs (and the followChildren ones).
 *
 * libbpf keeps every program of an object in the agent's memory while the object is
 * open, and each loaded hook is one open object. generic.bpf.o carries sixteen entry
 * programs, each with the whole selector and action pipeline inlined; a tracepoint hook,
 * the kind every kernel runs, needs five of them. Same source, same maps, same
 * configuration layout: only the unused entry programs are left out.
 */
#define VG_GEN_TRACEPOINTS_ONLY
#include "generic.bpf.c"
