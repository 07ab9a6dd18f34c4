"""Tracing policies: parsing, validation and loading (issue 3); ``store_api`` is the seam
the gRPC server uses to manage them."""
