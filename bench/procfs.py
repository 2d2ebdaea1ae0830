"""What a process costs, read from /proc: CPU seconds and resident memory; and the machine."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")
_PAGE_BYTES: Final = os.sysconf("SC_PAGE_SIZE")
# Fields of /proc/PID/stat after the command name: utime and stime are the 12th and 13th.
_UTIME_FIELD: Final = 11
_STIME_FIELD: Final = 12


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (not its children)."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name is in parentheses and may contain spaces: split after its last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[_UTIME_FIELD]) + int(fields[_STIME_FIELD])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """The process's resident set size now."""
    statm = Path(f"/proc/{pid}/statm").read_text(encoding="ascii").split()
    return int(statm[1]) * _PAGE_BYTES


@dataclass(frozen=True, slots=True)
class Machine:
    """The machine a run was measured on."""

    cores: int
    cpu_model: str
    memory_bytes: int
    system: str

    def describe(self) -> str:
        gib = self.memory_bytes / 2**30
        return f"{self.cores} cores, {self.cpu_model}, {gib:.1f} GiB memory, {self.system}"


def this_machine() -> Machine:
    """Cores usable by this process, the CPU model and the memory, from /proc."""
    return Machine(
        cores=len(os.sched_getaffinity(0)),
        cpu_model=_cpu_model(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")),
        memory_bytes=_memory_bytes(Path("/proc/meminfo").read_text(encoding="ascii")),
        system=f"{platform.system()} {platform.release()}",
    )


def _cpu_model(cpuinfo: str) -> str:
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "model name":
            return value.strip()
    return "unknown CPU"


def _memory_bytes(meminfo: str) -> int:
    for line in meminfo.splitlines():
        name, _, value = line.partition(":")
        if name == "MemTotal":
            return int(value.split()[0]) * 1024
    return 0
