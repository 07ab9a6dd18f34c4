"""The BPF ring buffer's size: given in all, per CPU, or sized from the CPU count."""

import os

from vigil.sensors.base import AUTO_RING_MIN, AUTO_RING_PER_CPU, ring_size

PAGE = os.sysconf("SC_PAGE_SIZE")


def test_a_total_wins_and_is_rounded_up_to_a_power_of_two() -> None:
    assert ring_size(3 << 20, per_cpu=1 << 10, cpus=64) == 4 << 20
    assert ring_size(1) == PAGE


def test_per_cpu_times_cpus() -> None:
    assert ring_size(0, per_cpu=64 << 10, cpus=4) == 256 << 10
    assert ring_size(0, per_cpu=64 << 10, cpus=3) == 256 << 10  # 192 KiB, rounded up


def test_automatic_size_follows_the_cpus_with_a_floor() -> None:
    assert ring_size(0, cpus=1) == AUTO_RING_MIN
    assert ring_size(0, cpus=2) == 2 * AUTO_RING_PER_CPU
    assert ring_size(0, cpus=48) == 64 << 20
