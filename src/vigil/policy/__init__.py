"""Tracing policies: parsing, validation and loading; ``store_api`` is the seam
the gRPC server uses to manage them."""
