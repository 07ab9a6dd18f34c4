#!/bin/bash
# Build the agent's OCI image from Debian packages and the project's own wheel; no base
# image is pulled. mmdebstrap makes a minimal Debian root filesystem (python3, libbpf1),
# the agent and its Python dependencies are installed into a venv at /opt/vigil from
# wheels built here, and umoci packs the result as a one-layer OCI image.
#
# Usage: tools/build-image.sh [OUTDIR]   (default build/image)
# Output: OUTDIR/vigil-image.tar, an OCI image layout archive (`podman load -i`,
# `ctr images import`), named $IMAGE_NAME (default localhost/vigil:latest).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build/image}
SUITE=${SUITE:-bookworm}
IMAGE_NAME=${IMAGE_NAME:-localhost/vigil:latest}
VPY=${VPY:-.venv/bin/python}

rm -rf "$OUT/wheels" "$OUT/oci" "$OUT/rootfs.tar"
mkdir -p "$OUT/wheels"
# the agent (with its BPF objects) and every dependency, as wheels for this Python
"$VPY" -m pip wheel -q --wheel-dir "$OUT/wheels" .

mmdebstrap --quiet --variant=minbase --mode=root \
    --include=python3,python3-venv,libbpf1,libelf1,zlib1g,ca-certificates \
    --customize-hook="copy-in $OUT/wheels /tmp" \
    --customize-hook='chroot "$1" python3 -m venv /opt/vigil' \
    --customize-hook='chroot "$1" /opt/vigil/bin/pip install -q --no-index --no-cache-dir --find-links /tmp/wheels vigil' \
    --customize-hook='rm -rf "$1/tmp/wheels" "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$OUT/rootfs.tar"

umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:latest"
umoci raw add-layer --image "$OUT/oci:latest" "$OUT/rootfs.tar"
umoci config --image "$OUT/oci:latest" \
    --author "vigil build" \
    --config.entrypoint /opt/vigil/bin/vigil --config.cmd agent \
    --config.env PATH=/opt/vigil/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.workingdir / \
    --config.label org.opencontainers.image.title=vigil
# the name podman and containerd give the image on import
python3 - "$OUT/oci/index.json" "$IMAGE_NAME" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for m in index["manifests"]:
    ann = m.setdefault("annotations", {})
    ann["io.containerd.image.name"] = name
json.dump(index, open(path, "w"))
PY
tar -C "$OUT/oci" -cf "$OUT/vigil-image.tar" .
rm -f "$OUT/rootfs.tar"
echo "$OUT/vigil-image.tar: $IMAGE_NAME ($(du -h "$OUT/vigil-image.tar" | cut -f1))"
