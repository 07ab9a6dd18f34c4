"""Sensors: one area's BPF programs and maps, loaded and attached as a unit."""
