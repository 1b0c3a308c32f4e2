"""What the benchmark scripts report about the machine they ran on.

This box is shared: each script measures how much CPU *other* processes used
during its run (all CPU time from /proc/stat minus its own), so a number taken
under load says so next to it.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from pathlib import Path


def busy_cpu_seconds() -> float | None:
    """CPU-seconds all processes on this machine have used (Linux /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU-seconds used by this process and its finished children (workers, the app)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def cpu_name() -> str:
    """The processor's model name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_details() -> dict:
    """What makes sampling fast or slow here: SIMD flags and cache sizes (Linux)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    caches = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if kind != "Instruction":
            caches[f"L{level}"] = size
    return {"cpu": cpu_name(), "flags": [flag for flag in wanted if flag in flags],
            "caches_per_core": caches}


def cpu_line(details: dict) -> str:
    """One line of `cpu_details()` for a report."""
    caches = ", ".join(f"{level} {size}" for level, size in details["caches_per_core"].items())
    return (f"cpu: {details['cpu']}; flags {' '.join(details['flags']) or 'none of note'}; "
            f"caches {caches or 'unknown'}")


class LoadMeter:
    """Made just before a benchmark; `record()` afterwards says how loaded the machine was."""

    def __init__(self) -> None:
        self.load_before = os.getloadavg()
        self.busy_before, self.own_before = busy_cpu_seconds(), own_cpu_seconds()
        self.wall_before = time.time()

    def record(self) -> dict:
        """CPU count, load averages, and CPU used meanwhile by processes not ours."""
        wall = max(1e-9, time.time() - self.wall_before)
        others = None
        if self.busy_before is not None:
            others = max(0.0, (busy_cpu_seconds() - self.busy_before)
                         - (own_cpu_seconds() - self.own_before))
        return {
            "cpu_count": os.cpu_count(),
            "load_average_before": [round(x, 2) for x in self.load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "other_processes_cpu_seconds": None if others is None else round(others, 1),
            "other_processes_cores": None if others is None else round(others / wall, 2),
        }


def load_line(machine: dict) -> str:
    """The 'machine load: ...' line of a report, from `LoadMeter.record()`'s entries."""
    line = (f"machine load: {machine['cpu_count']} CPUs, load average "
            f"{machine['load_average_before'][0]:.2f} before, "
            f"{machine['load_average_after'][0]:.2f} after")
    if machine["other_processes_cores"] is not None:
        line += (f"; other processes used about {machine['other_processes_cores']:.2f} cores "
                 "meanwhile (another job running makes these times pessimistic)")
    return line
