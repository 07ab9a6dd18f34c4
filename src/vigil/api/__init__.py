"""Tetragon-compatible protobuf API (package ``tetragon``), generated from proto/.

Import the messages from :mod:`vigil.api.tetragon` (``events_pb2``, ``tetragon_pb2``,
``sensors_pb2``, ``sensors_pb2_grpc``). Regenerate with ``make proto``.
"""
