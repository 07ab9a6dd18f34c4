#!/usr/bin/env bash
# Run a command as on a freshly booted host: in a private mount namespace in which
# tracefs, debugfs and bpffs are not mounted. Whatever the command mounts (the agent
# mounts what it needs) disappears with the namespace, so the host is left as it was,
# and a test that passes only because something was mounted by hand fails here.
# Needs root (CAP_SYS_ADMIN); without it the command runs as it is, with a warning.
set -euo pipefail
if [[ "${1:-}" != --in-namespace ]]; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "fresh-host: not root: running without a private mount namespace" >&2
        exec "$@"
    fi
    exec unshare --mount --propagation private -- "$0" --in-namespace "$@"
fi
shift
# deepest first: debugfs' tracing/ automount before debugfs itself
# (findmnt exits 1 when it finds nothing)
pseudo_mounts() { findmnt -rn -t tracefs,debugfs,bpf -o TARGET || true; }
pseudo_mounts | sort -r | while read -r target; do
    umount -l "$target"
done
left=$(pseudo_mounts)
if [[ -n $left ]]; then
    echo "fresh-host: could not unmount: $left" >&2
    exit 1
fi
exec "$@"
