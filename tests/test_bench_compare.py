"""The comparison benchmark's verdict (bench/compare_privacyidea.py): with several rounds per cell,
each side's figures are the medians of its rounds, the ratio is that of the median rates, and the
target asks for 50 times the throughput with a lower p99."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))

from compare_privacyidea import FULL, Report, comparison_rows
from verify_report import BackendResult, RunResult


def run(backend: str, rps: float, p99: float, *, cpu: float = 100.0) -> RunResult:
    return RunResult(
        backend=backend,
        workload="verify-wrong",
        concurrency=1,
        requests=1000,
        seconds=1000 / rps,
        requests_per_second=rps,
        p50_ms=p99 / 2,
        p95_ms=p99,
        p99_ms=p99,
        errors=0,
        verified=0,
        statuses={"200": 1000},
        error_samples=[],
        server_cpu_pct=cpu,
        client_cpu_pct=5.0,
        host_cpu_pct=50.0,
        steal_pct=0.0,
    )


def report(pi: list[RunResult], sk: list[RunResult]) -> Report:
    config = replace(FULL, concurrencies=(1,), rounds=len(sk))
    return Report(
        config=config,
        installed={},
        backends=[
            BackendResult(backend="privacyidea", runs=pi),
            BackendResult(backend="sparekey", runs=sk),
        ],
    )


def test_one_disturbed_round_does_not_decide_the_verdict() -> None:
    pi = [run("privacyidea", r, 40.0) for r in (30.0, 45.0, 31.0)]  # a fast round for privacyIDEA
    sk = [run("sparekey", r, 1.0) for r in (1600.0, 1650.0, 900.0)]  # a slow one for Sparekey
    (row,) = comparison_rows(report(pi, sk))
    assert (row["privacyidea_rps"], row["sparekey_rps"]) == (31.0, 1600.0)
    assert row["ratio"] == 51.6  # 1600 / 31: the medians, whichever rounds they came from
    assert row["round_ratios"] == [53.3, 36.7, 29.0]
    assert row["rounds"] == 3
    assert row["target_met"]


def test_the_target_needs_fifty_times_the_median_rate() -> None:
    pi = [run("privacyidea", 40.0, 40.0) for _ in range(3)]
    sk = [run("sparekey", r, 1.0) for r in (1990.0, 2100.0, 1950.0)]
    (row,) = comparison_rows(report(pi, sk))
    assert row["ratio"] == 49.8
    assert not row["target_met"]


def test_the_target_needs_a_lower_median_p99() -> None:
    pi = [run("privacyidea", 20.0, p99) for p99 in (30.0, 30.0, 60.0)]
    sk = [run("sparekey", 2000.0, p99) for p99 in (25.0, 35.0, 40.0)]
    (row,) = comparison_rows(report(pi, sk))
    assert (row["privacyidea_p99_ms"], row["sparekey_p99_ms"]) == (30.0, 35.0)
    assert row["ratio"] == 100.0
    assert not row["target_met"]


def test_the_cpu_ratio_compares_the_median_work_per_cpu_second() -> None:
    pi = [run("privacyidea", 20.0, 40.0, cpu=cpu) for cpu in (190.0, 200.0, 195.0)]
    sk = [run("sparekey", 2000.0, 1.0, cpu=cpu) for cpu in (90.0, 100.0, 110.0)]
    (row,) = comparison_rows(report(pi, sk))
    assert row["ratio_per_cpu_second"] == 195.0  # (2000 / 100) / (20 / 195)
