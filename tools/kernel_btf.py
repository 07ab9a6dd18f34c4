"""Write the BTF of a kernel image (a vmlinuz, as Debian packages it) to a file, so that
``vigil tracingpolicy check --btf FILE`` can check policies against that kernel's
functions without booting it.

    python tools/kernel_btf.py VMLINUZ OUT

A bzImage carries the kernel ELF compressed (xz, zstd or gzip); the BTF is that ELF's
``.BTF`` section. zstd needs the ``zstd`` program (Python's standard library has no
zstd before 3.14); xz and gzip are decompressed in-process.
"""

from __future__ import annotations

import gzip
import lzma
import subprocess
import sys
import zlib
from pathlib import Path

from vigil.policy.kbtf import KernelBtf, elf_section

_MAGICS = ((b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\x1f\x8b\x08", "gzip"))


def kernel_elf(image: bytes) -> bytes:
    """The kernel ELF inside a compressed kernel image: the first payload, of the formats
    above, that decompresses to an ELF file."""
    for magic, fmt in _MAGICS:
        at = image.find(magic)
        while at >= 0:
            data = image[at:]
            try:
                if fmt == "xz":
                    elf = lzma.LZMADecompressor().decompress(data)
                elif fmt == "gzip":
                    elf = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data)
                else:  # the frame is followed by the image's trailer: zstd -d would stop
                    elf = subprocess.run(["zstd", "-d", "-c", "-q"], input=data,
                                         capture_output=True, check=False).stdout
            except (lzma.LZMAError, zlib.error, gzip.BadGzipFile, OSError):
                elf = b""
            if elf[:4] == b"\x7fELF":
                return elf
            at = image.find(magic, at + 1)
    raise SystemExit("no xz, zstd or gzip payload holding an ELF kernel in the image")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python tools/kernel_btf.py VMLINUZ OUT", file=sys.stderr)
        return 2
    btf = elf_section(kernel_elf(Path(argv[1]).read_bytes()), ".BTF")
    KernelBtf(btf)  # refuse to write what is not BTF
    Path(argv[2]).write_bytes(btf)
    print(f"{argv[2]}: {len(btf)} bytes of BTF from {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
