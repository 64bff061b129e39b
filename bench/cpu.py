"""CPU accounting from /proc (Linux): a server process, this process, and the whole machine.

On a machine without /proc the readings are None and the benchmarks print "-".
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CpuMeter",
    "CpuUse",
    "HostTicks",
    "background_cpu",
    "host_ticks",
    "process_cpu_seconds",
    "process_tree",
]


def process_cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of process ``pid`` (all its threads), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a pre-forking server's master and its workers), or just
    ``pid`` where /proc does not list children."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                pending += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


@dataclass(frozen=True)
class HostTicks:
    """CPU ticks of the whole machine since boot, all cores together.

    ``steal`` is time a virtual machine's CPUs were runnable but the hypervisor ran something
    else: on a shared host it is capacity lost to other guests, not work done here.
    """

    busy: int
    steal: int
    total: int


def host_ticks() -> HostTicks | None:
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    return HostTicks(
        busy=user + nice + system + irq + softirq,
        steal=steal,
        total=user + nice + system + idle + iowait + irq + softirq + steal,
    )


def _host_pcts(
    before: HostTicks | None, after: HostTicks | None
) -> tuple[float | None, float | None]:
    """(busy, steal) between two readings, in % of all cores, rounded."""
    if before is None or after is None or after.total <= before.total:
        return None, None
    total = after.total - before.total
    busy = round(100 * (after.busy - before.busy) / total, 1)
    return busy, round(100 * (after.steal - before.steal) / total, 1)


async def background_cpu(seconds: float = 1.0) -> tuple[float | None, float | None]:
    """(busy, steal) of the machine in % of all cores, over ``seconds`` of our own idleness."""
    before = host_ticks()
    await asyncio.sleep(seconds)
    return _host_pcts(before, host_ticks())


@dataclass(frozen=True)
class CpuUse:
    """Over one interval: server and client in % of one core, the host in % of all cores."""

    server_cpu_pct: float | None
    client_cpu_pct: float | None
    host_cpu_pct: float | None
    steal_pct: float | None


class CpuMeter:
    """Measures :class:`CpuUse` from :meth:`start` to :meth:`read`.

    With ``tree``, the server is the process and its descendants (workers that live through the
    whole measurement, as a pre-forking server's do). Further pids are more server processes,
    counted together (several servers on one database).
    """

    def __init__(self, server_pid: int, *more_pids: int, tree: bool = False) -> None:
        self._pids = (server_pid, *more_pids)
        self._tree = tree
        self._wall = 0.0
        self._client = 0.0
        self._server: float | None = None
        self._host: HostTicks | None = None

    def _server_seconds(self) -> float | None:
        pids = self._pids
        if self._tree:
            pids = tuple(pid for root in self._pids for pid in process_tree(root))
        readings = [process_cpu_seconds(pid) for pid in pids]
        known = [r for r in readings if r is not None]
        return sum(known) if known else None

    def start(self) -> None:
        self._wall = time.perf_counter()
        self._client = time.process_time()
        self._server = self._server_seconds()
        self._host = host_ticks()

    def read(self, *, client_elsewhere: float = 0.0) -> CpuUse:
        """The use since :meth:`start`; ``client_elsewhere`` is CPU seconds the client spent in
        other processes (a load client in C), counted as the client's."""
        wall = time.perf_counter() - self._wall
        server = self._server_seconds()
        server_pct = None
        if server is not None and self._server is not None and wall > 0:
            server_pct = round(100 * (server - self._server) / wall, 1)
        client = time.process_time() - self._client + client_elsewhere
        client_pct = round(100 * client / wall, 1) if wall else None
        host_pct, steal_pct = _host_pcts(self._host, host_ticks())
        return CpuUse(
            server_cpu_pct=server_pct,
            client_cpu_pct=client_pct,
            host_cpu_pct=host_pct,
            steal_pct=steal_pct,
        )
