"""The results of ``verify_load.py`` and how they are shown: the table, the ceiling, the checks."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cpu import CpuUse
from loadgen import LoadStats, percentile

__all__ = [
    "BackendResult",
    "RunResult",
    "ceiling_rows",
    "findings",
    "fmt",
    "pct",
    "print_background",
    "print_ceiling",
    "print_checks",
    "print_table",
    "progress_line",
    "summarize",
]

SPAREKEY_BACKENDS = ("sqlite", "postgres")
BUSY_HOST_PCT = 10.0  # background CPU use, in % of all cores, above which a warning is printed
STEAL_PCT = 10.0  # CPU time stolen by the hypervisor, in % of all cores, above which likewise


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """One measured run: a workload at one concurrency against one server."""

    backend: str
    workload: str
    concurrency: int
    requests: int
    seconds: float
    requests_per_second: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    verified: int
    statuses: dict[str, int]
    error_samples: list[str]
    server_cpu_pct: float | None
    client_cpu_pct: float | None
    host_cpu_pct: float | None
    steal_pct: float | None

    @property
    def verified_pct(self) -> float:
        return 100 * self.verified / self.requests if self.requests else 0.0


@dataclass
class BackendResult:
    """Everything measured on one server, and how that server behaved."""

    backend: str
    background_cpu_pct: float | None = None
    background_steal_pct: float | None = None
    error: str | None = None
    users: int = 0
    setup_seconds: float = 0.0
    runs: list[RunResult] = field(default_factory=list)
    exit_status: int | None = None
    exited_cleanly: bool = True
    log_file: str = ""
    notable_log_lines: list[str] = field(default_factory=list)


def _ms(seconds: float) -> float | None:
    return None if math.isnan(seconds) else round(seconds * 1000, 3)


def summarize(
    backend: str, workload: str, concurrency: int, stats: LoadStats, cpu: CpuUse
) -> RunResult:
    latencies = sorted(stats.latencies)
    return RunResult(
        backend=backend,
        workload=workload,
        concurrency=concurrency,
        requests=stats.requests,
        seconds=round(stats.elapsed, 3),
        requests_per_second=round(stats.rate, 1),
        p50_ms=_ms(percentile(latencies, 0.50)),
        p95_ms=_ms(percentile(latencies, 0.95)),
        p99_ms=_ms(percentile(latencies, 0.99)),
        errors=stats.errors,
        verified=stats.verified,
        statuses={str(status): n for status, n in sorted(stats.statuses.items())},
        error_samples=stats.samples,
        server_cpu_pct=cpu.server_cpu_pct,
        client_cpu_pct=cpu.client_cpu_pct,
        host_cpu_pct=cpu.host_cpu_pct,
        steal_pct=cpu.steal_pct,
    )


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def progress_line(r: RunResult) -> str:
    return (
        f"  {r.backend:<8} {r.workload:<12} c={r.concurrency:<3} {r.requests:>6} req "
        f"{r.requests_per_second:>8.1f} req/s  p99 {fmt(r.p99_ms)} ms  errors {r.errors}  "
        f"verified {pct(r.verified_pct)}"
    )


_TABLE_HEADER = (
    f"{'backend':<9}{'workload':<14}{'conc':>5}{'requests':>10}{'req/s':>10}"
    f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}{'verified':>10}"
    f"{'srv cpu':>9}{'cli cpu':>9}{'host cpu':>10}{'steal':>7}"
)


def _table_row(r: RunResult) -> str:
    return (
        f"{r.backend:<9}{r.workload:<14}{r.concurrency:>5}{r.requests:>10}"
        f"{r.requests_per_second:>10.1f}{fmt(r.p50_ms):>9}{fmt(r.p95_ms):>9}{fmt(r.p99_ms):>9}"
        f"{r.errors:>8}{pct(r.verified_pct):>10}{pct(r.server_cpu_pct, 0):>9}"
        f"{pct(r.client_cpu_pct, 0):>9}{pct(r.host_cpu_pct, 0):>10}{pct(r.steal_pct, 0):>7}"
    )


def print_table(runs: Sequence[RunResult]) -> None:
    print(_TABLE_HEADER)
    for r in runs:
        print(_table_row(r))


def ceiling_rows(runs: Sequence[RunResult], concurrencies: Sequence[int]) -> list[dict[str, Any]]:
    """Per concurrency: the bare rate, and each backend's verify-valid rate as a share of it."""
    rate = {(r.backend, r.workload, r.concurrency): r.requests_per_second for r in runs}
    rows = []
    for concurrency in concurrencies:
        bare = rate.get(("bare", "bare", concurrency))
        row: dict[str, Any] = {"concurrency": concurrency, "bare_rps": bare}
        for backend in SPAREKEY_BACKENDS:
            valid = rate.get((backend, "verify-valid", concurrency))
            row[f"{backend}_rps"] = valid
            row[f"{backend}_pct_of_bare"] = (
                round(100 * valid / bare, 1) if valid is not None and bare else None
            )
        rows.append(row)
    return rows


def print_ceiling(rows: Sequence[dict[str, Any]]) -> None:
    print("\nSparekey verify-valid throughput as a share of the bare Starlette ceiling:")
    print(
        f"{'conc':>5}{'bare req/s':>12}{'sqlite req/s':>14}{'% of bare':>11}"
        f"{'postgres req/s':>16}{'% of bare':>11}"
    )
    for row in rows:
        print(
            f"{row['concurrency']:>5}{fmt(row['bare_rps'], 1):>12}"
            f"{fmt(row['sqlite_rps'], 1):>14}{pct(row['sqlite_pct_of_bare']):>11}"
            f"{fmt(row['postgres_rps'], 1):>16}{pct(row['postgres_pct_of_bare']):>11}"
        )


def _noisy(r: RunResult | BackendResult) -> bool:
    if isinstance(r, BackendResult):
        busy, steal = r.background_cpu_pct, r.background_steal_pct
    else:
        busy, steal = None, r.steal_pct
    return (busy or 0) > BUSY_HOST_PCT or (steal or 0) > STEAL_PCT


def print_background(backends: Sequence[BackendResult]) -> None:
    """Warn when other processes or other virtual machines took CPU: the figures say less then."""
    busy = [b for b in backends if _noisy(b)]
    stolen = [r for b in backends for r in b.runs if _noisy(r)]
    if not busy and not stolen:
        return
    print("\nWARNING: CPU was taken by others, so these figures understate what the code can do:")
    for b in busy:
        print(
            f"  before {b.backend} started: {pct(b.background_cpu_pct, 0)} of all cores busy, "
            f"{pct(b.background_steal_pct, 0)} stolen by the hypervisor"
        )
    for r in stolen:
        print(f"  during {r.backend} {r.workload} c={r.concurrency}: {pct(r.steal_pct, 0)} stolen")


def findings(backends: Sequence[BackendResult]) -> list[str]:
    """Everything that looked wrong: failed valid codes, verified wrong codes, errors, logs."""
    found = []
    for b in backends:
        if b.error:
            found.append(f"{b.backend} failed: " + b.error.replace("\n", "\n    "))
        for r in b.runs:
            where = f"{r.backend} {r.workload} c={r.concurrency}"
            if r.workload == "verify-valid" and r.verified != r.requests:
                found.append(f"{where}: {r.requests - r.verified} valid codes not verified")
            if r.workload != "verify-valid" and r.verified:
                found.append(f"{where}: {r.verified} answers verified:true")
            if r.errors:
                found.append(f"{where}: {r.errors} errors {r.statuses}; e.g. {r.error_samples[:2]}")
        if not b.exited_cleanly:
            found.append(f"{b.backend} server exited with status {b.exit_status}")
        if b.notable_log_lines:
            found.append(f"{b.backend} server log ({b.log_file}) has lines like:")
            found += [f"    {line}" for line in b.notable_log_lines[:10]]
    return found


def print_checks(problems: Sequence[str]) -> None:
    if not problems:
        print("\nChecks: all answers as expected, no errors, servers stopped cleanly.")
        return
    print("\nChecks found problems:")
    for line in problems:
        print(textwrap.indent(line, "  "))
