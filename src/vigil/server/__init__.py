"""Vigil's Tetragon-compatible gRPC API (service ``tetragon.FineGuidanceSensors``).

Modules: ``config`` (settings, no grpc import), ``filters`` (GetEvents filters and
field filters on dict events, pure), ``convert`` (dict events -> wire bytes, request and
status messages), ``subscriber`` (a stream's bounded queue), ``servicer`` (the RPCs, on
Protocols only), ``listen`` (unix socket 0660 / TLS-only TCP / info file), ``persist``
(--persist-grpc-policies), ``fakes`` (in-memory policy store), ``server`` (assembly:
``start_server``, given the agent's parts by ``vigil.daemon.views``).
"""
