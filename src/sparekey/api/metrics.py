"""Prometheus metrics, one registry per application instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from sparekey.domain.models import VerifyResult

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.verifications = Counter(
            "sparekey_verifications",
            "Verification attempts by result and the type of factor that matched",
            ["result", "factor_type"],
            registry=self.registry,
        )
        self.verify_seconds = Histogram(
            "sparekey_verify_duration_seconds",
            "Time spent verifying a code, from request to answer",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry,
        )

        self._outcomes: dict[tuple[bool, str | None], Counter] = {}

    def count_verification(self, result: VerifyResult, *, seconds: float) -> None:
        key = (result.verified, result.factor_type)
        counter = self._outcomes.get(key)
        if counter is None:
            counter = self.verifications.labels(
                result="success" if result.verified else "failure",
                factor_type=result.factor_type or "none",
            )
            self._outcomes[key] = counter
        counter.inc()
        self.verify_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
