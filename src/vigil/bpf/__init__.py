"""The only layer that talks to the kernel's BPF and fanotify interfaces (ctypes and
libbpf). Its public modules are its API: ``object`` (BpfObject, Program, Map, Link),
``ringbuf``, ``features`` (probes, privileges, CPU count), ``hostns``, ``keep``,
``mounts`` and ``fanotify``. ``_libbpf`` (the raw ctypes declarations) is private to
this package; it imports nothing of Vigil but ``vigil.errors``."""
