"""Vigil: runtime security observability and enforcement for Linux (eBPF + Python)."""

__version__ = "0.1.0"
