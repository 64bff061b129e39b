"""WebAuthn authentication-verify throughput next to OTP verify, in one run on one server.

Starts ``sparekey serve`` (SQLite; PostgreSQL too with ``--backends sqlite,postgres``), enrolls
users through the HTTP API, each with one WebAuthn credential (registered by the software
authenticator of ``tests/softauthn.py``) and one HOTP factor, then measures in alternating rounds:

- ``otp-verify``: POST /v1/users/{id}/verify with a fresh valid HOTP code (as ``verify_load.py``);
- ``webauthn-begin``: POST /v1/webauthn/authentications, a fresh challenge for a user;
- ``webauthn-verify``: POST /v1/webauthn/authentications/verify with an assertion that the
  software authenticator signed over one of those challenges before the measured window opened.

Every verify answer must be ``verified: true`` (and name the right user and factor); anything else
is reported as a failure, not as a figure. Prints a table and writes JSON to bench/results/.

    .venv/bin/python bench/webauthn_load.py [--quick] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import platform
import signal
import sys
import tempfile
import textwrap
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from cpu import CpuMeter, CpuUse, background_cpu
from loadgen import (
    Connection,
    LoadStats,
    RequestSource,
    Response,
    build_request,
    positive_ints,
    run_load,
)
from servers import (
    REPO,
    Server,
    ServerError,
    free_port,
    running,
    sparekey_argv,
    sparekey_init,
    wait_ready,
)
from verify_load import (
    HOTP_NOTE,
    SETUP_CONNECTIONS,
    Account,
    api_call,
    enroll_users,
    loop_name,
    partition,
    record_exit,
    results_stamp,
    run,
    source_state,
    sparekey_env,
    valid_source,
)
from verify_report import (
    SPAREKEY_BACKENDS,
    BackendResult,
    RunResult,
    pct,
    print_background,
    print_table,
    progress_line,
    summarize,
)

sys.path.append(str(REPO))  # tests/ is a namespace package at the repository root
from tests.softauthn import SoftAuthenticator, SoftAuthenticatorError

T = TypeVar("T")

RESULTS_DIR = REPO / "bench" / "results"
OTP = "otp-verify"
BEGIN = "webauthn-begin"
WEBAUTHN = "webauthn-verify"
WORKLOADS = (OTP, BEGIN, WEBAUTHN)
TARGET_PCT = 50.0  # the target: WebAuthn verify at least half the OTP verify rate
MAX_RUN_SECONDS = 60.0  # a safety bound only: runs are bounded by their request count
CHALLENGE_SECONDS = 300  # the server's default lifetime of a challenge, which we keep
NOTE = (
    "webauthn-verify is timed alone: each request carries an assertion signed (ES256) over a "
    "challenge that webauthn-begin fetched just before, outside its window, so every challenge is "
    "fresh and used once. The credentials keep a signature counter of 0, like most passkeys. For "
    "webauthn-begin, 'verified' is the share of answers whose options the authenticator could "
    "sign. sign-in = begin then verify, derived: 1 / (1/begin + 1/verify)."
)


@dataclass(frozen=True, kw_only=True)
class Config:
    users: int
    concurrencies: tuple[int, ...]
    requests: int  # measured requests per workload and concurrency, over all rounds
    rounds: int
    warmup_requests: int  # before each measured run
    warmup_seconds: float
    backends: tuple[str, ...] = ("sqlite",)

    @property
    def round_requests(self) -> int:
        return math.ceil(self.requests / self.rounds)


FULL = Config(
    users=256,
    concurrencies=(1, 8),
    requests=6_000,
    rounds=6,
    warmup_requests=50,
    warmup_seconds=0.5,
)
QUICK = Config(
    users=32,
    concurrencies=(1, 8),
    requests=400,
    rounds=2,
    warmup_requests=20,
    warmup_seconds=0.3,
)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """WebAuthn next to OTP at one concurrency on one backend."""

    backend: str
    concurrency: int
    otp_rps: float
    webauthn_rps: float
    ratio_pct: float
    round_ratio_pct: list[float]
    begin_rps: float
    sign_in_rps: float
    sign_in_ratio_pct: float

    @property
    def target_met(self) -> bool:
        return self.ratio_pct >= TARGET_PCT


@dataclass
class Outcome:
    """Everything measured on one backend, beyond what :class:`BackendResult` holds."""

    result: BackendResult
    comparisons: list[Comparison] = field(default_factory=list)
    rounds: list[RunResult] = field(default_factory=list)
    wrong_answers: int = 0  # not signable (begin), or verified for someone else (verify)
    wrong_samples: list[str] = field(default_factory=list)
    warmup_failures: int = 0
    max_challenge_age_seconds: float = 0.0

    def wrong(self, text: str) -> None:
        self.wrong_answers += 1
        if len(self.wrong_samples) < 5:
            self.wrong_samples.append(text)


@dataclass
class Rounds:
    """The measured rounds of one workload at one concurrency."""

    stats: list[LoadStats] = field(default_factory=list)
    cpu: list[CpuUse] = field(default_factory=list)

    def add(self, stats: LoadStats, cpu: CpuUse) -> None:
        self.stats.append(stats)
        self.cpu.append(cpu)

    def merged(self) -> tuple[LoadStats, CpuUse]:
        """All rounds as one run: their requests, latencies and time summed, CPU time-weighted."""
        total = LoadStats()
        for stats in self.stats:
            total.elapsed += stats.elapsed
            total.latencies += stats.latencies
            total.statuses.update(stats.statuses)
            total.verified += stats.verified
            total.failures += stats.failures
            total.samples += stats.samples[: max(0, 5 - len(total.samples))]
        weights = [stats.elapsed for stats in self.stats]

        def mean(values: list[float | None]) -> float | None:
            known = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
            weight = sum(w for _, w in known)
            return round(sum(v * w for v, w in known) / weight, 1) if weight else None

        cpu = CpuUse(
            server_cpu_pct=mean([c.server_cpu_pct for c in self.cpu]),
            client_cpu_pct=mean([c.client_cpu_pct for c in self.cpu]),
            host_cpu_pct=mean([c.host_cpu_pct for c in self.cpu]),
            steal_pct=mean([c.steal_pct for c in self.cpu]),
        )
        return total, cpu


class RecordingConnection(Connection):
    """A keep-alive connection that keeps every request it carried with its response."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.exchanges: list[tuple[bytes, Response]] = []

    async def send(self, request: bytes) -> Response:
        response = await super().send(request)
        self.exchanges.append((request, response))
        return response


# --- Setup: the WebAuthn credentials (verify_load.enroll_users makes the users and HOTP) ---


async def register_credentials(
    port: int, token: str, accounts: Sequence[Account], key: SoftAuthenticator, origin: str
) -> dict[str, tuple[str, str]]:
    """Register one credential of ``key`` per user through the API; returns each credential's
    id (base64url) with its user and factor."""

    async def register_share(share: Sequence[Account]) -> dict[str, tuple[str, str]]:
        connection = Connection(port)
        registered = {}
        try:
            for account in share:
                # Adding a key is a sensitive change: step up with the user's next HOTP code.
                code = {"code": account.take_code()}
                verify = f"/v1/users/{account.user_id}/verify"
                assurance = (await api_call(connection, token, "POST", verify, code, 200))[
                    "assurance_token"
                ]
                path = f"/v1/users/{account.user_id}/webauthn/registrations"
                options = await api_call(
                    connection, token, "POST", path, {}, 200, assurance=assurance
                )
                credential = key.create(options["options"], origin=origin)
                body = {"credential": credential}
                factor = await api_call(
                    connection, token, "POST", f"{path}/verify", body, 201, assurance=assurance
                )
                registered[credential["id"]] = (account.user_id, factor["id"])
        finally:
            await connection.close()
        return registered

    shares = [accounts[i::SETUP_CONNECTIONS] for i in range(SETUP_CONNECTIONS)]
    registered: dict[str, tuple[str, str]] = {}
    for part in await asyncio.gather(*(register_share(share) for share in shares)):
        registered.update(part)
    return registered


# --- Requests ---


def json_request(port: int, token: str, path: str, payload: object) -> bytes:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return build_request("POST", port, path, headers=headers, body=json.dumps(payload).encode())


def begin_source(port: int, token: str, accounts: Sequence[Account]) -> RequestSource:
    """The users in turn, shared by all workers: a fresh challenge for each user alike."""
    turn = itertools.cycle(
        [
            json_request(port, token, "/v1/webauthn/authentications", {"user_id": a.user_id})
            for a in accounts
        ]
    )
    return lambda: next(turn)


def body_of(request: bytes) -> Any:
    return json.loads(request.split(b"\r\n\r\n", 1)[1])


# --- Measuring ---


async def measure(
    server: Server,
    connections: Sequence[Connection],
    sources: Sequence[RequestSource],
    *,
    warmup: int,
    requests: int,
    config: Config,
) -> tuple[LoadStats, LoadStats, CpuUse]:
    """A warm-up, then one measured run bounded by ``requests``: (warm-up, measured, CPU)."""
    try:
        await asyncio.gather(*(c.connect() for c in connections))
        warm = await run_load(
            connections, sources, max_requests=warmup, max_seconds=config.warmup_seconds
        )
        meter = CpuMeter(server.pid)
        meter.start()
        stats = await run_load(
            connections, sources, max_requests=requests, max_seconds=MAX_RUN_SECONDS
        )
        cpu = meter.read()
    finally:
        await asyncio.gather(*(c.close() for c in connections))
    server.check_alive()
    return warm, stats, cpu


class Bench:
    """The workloads on one running server, and what they found."""

    def __init__(
        self,
        server: Server,
        outcome: Outcome,
        *,
        token: str,
        origin: str,
        config: Config,
        accounts: Sequence[Account],
        key: SoftAuthenticator,
        credentials: dict[str, tuple[str, str]],
    ) -> None:
        self.server = server
        self.outcome = outcome
        self.backend = outcome.result.backend
        self.token = token
        self.origin = origin
        self.config = config
        self.accounts = accounts
        self.key = key
        self.credentials = credentials

    async def concurrency(self, concurrency: int) -> None:
        """Every workload at ``concurrency``, in rounds that alternate which goes first."""
        rounds = {workload: Rounds() for workload in WORKLOADS}
        for n in range(self.config.rounds):
            if n % 2 == 0:
                await self.otp_round(concurrency, rounds)
                await self.webauthn_round(concurrency, rounds)
            else:
                await self.webauthn_round(concurrency, rounds)
                await self.otp_round(concurrency, rounds)
        merged = {workload: rounds[workload].merged() for workload in WORKLOADS}
        runs = {
            w: summarize(self.backend, w, concurrency, stats, cpu)
            for w, (stats, cpu) in merged.items()
        }
        self.outcome.result.runs += runs.values()
        otp, begin, verify = (runs[w].requests_per_second for w in WORKLOADS)
        sign_in = 1 / (1 / begin + 1 / verify) if begin and verify else 0.0
        self.outcome.comparisons.append(
            Comparison(
                backend=self.backend,
                concurrency=concurrency,
                otp_rps=otp,
                webauthn_rps=verify,
                ratio_pct=round(100 * verify / otp, 1) if otp else 0.0,
                round_ratio_pct=[
                    round(100 * w.rate / o.rate, 1) if o.rate else 0.0
                    for o, w in zip(rounds[OTP].stats, rounds[WEBAUTHN].stats, strict=True)
                ],
                begin_rps=begin,
                sign_in_rps=round(sign_in, 1),
                sign_in_ratio_pct=round(100 * sign_in / otp, 1) if otp else 0.0,
            )
        )

    def _record_round(self, workload: str, concurrency: int, stats: LoadStats, cpu: CpuUse) -> None:
        result = summarize(self.backend, workload, concurrency, stats, cpu)
        self.outcome.rounds.append(result)
        print(progress_line(result), file=sys.stderr, flush=True)

    async def otp_round(self, concurrency: int, rounds: dict[str, Rounds]) -> None:
        port, token = self.server.port, self.token
        sources = [valid_source(port, token, s) for s in partition(self.accounts, concurrency)]
        warm, stats, cpu = await measure(
            self.server,
            [Connection(port) for _ in sources],
            sources,
            warmup=self.config.warmup_requests,
            requests=self.config.round_requests,
            config=self.config,
        )
        self.outcome.warmup_failures += warm.requests - warm.verified
        rounds[OTP].add(stats, cpu)
        self._record_round(OTP, concurrency, stats, cpu)

    async def webauthn_round(self, concurrency: int, rounds: dict[str, Rounds]) -> None:
        """Fresh challenges (measured as webauthn-begin), signed, then verified (measured)."""
        port, config = self.server.port, self.config
        begun = time.monotonic()
        source = begin_source(port, self.token, self.accounts)
        connections = [RecordingConnection(port) for _ in range(concurrency)]
        warm, stats, cpu = await measure(
            self.server,
            connections,
            [source] * concurrency,
            warmup=config.warmup_requests,
            requests=config.round_requests,
            config=config,
        )
        wrong_before = self.outcome.wrong_answers
        assertions = self.sign([c.exchanges for c in connections])
        unsignable = self.outcome.wrong_answers - wrong_before
        stats.verified = max(0, stats.statuses[200] - unsignable)  # see NOTE
        self.outcome.warmup_failures += warm.errors
        rounds[BEGIN].add(stats, cpu)
        self._record_round(BEGIN, concurrency, stats, cpu)

        # Every assertion is used at most once: the warm-up takes what the measured run does not
        # need, and a source is called only within a run's request bound.
        queue = deque(assertions)
        warmup = max(0, len(queue) - config.round_requests)
        connections = [RecordingConnection(port) for _ in range(concurrency)]
        warm, stats, cpu = await measure(
            self.server,
            connections,
            [queue.popleft] * concurrency,
            warmup=warmup,
            requests=len(queue) - warmup,
            config=config,
        )
        age = time.monotonic() - begun
        self.outcome.max_challenge_age_seconds = max(self.outcome.max_challenge_age_seconds, age)
        self.outcome.warmup_failures += warm.requests - warm.verified
        self.check_answers([c.exchanges for c in connections])
        rounds[WEBAUTHN].add(stats, cpu)
        self._record_round(WEBAUTHN, concurrency, stats, cpu)

    def sign(self, exchanges: Sequence[Sequence[tuple[bytes, Response]]]) -> list[bytes]:
        """The authenticator's assertion for every challenge fetched, as verify requests, with
        the workers' answers interleaved so that consecutive requests are for different users."""
        assertions = []
        for exchange in itertools.chain.from_iterable(itertools.zip_longest(*exchanges)):
            if exchange is None or exchange[1].status != 200:
                continue
            try:
                assertion = self.key.get(exchange[1].json()["options"], origin=self.origin)
            except (SoftAuthenticatorError, ValueError, KeyError) as exc:
                self.outcome.wrong(f"{BEGIN}: options not signable: {exc}")
                continue
            path = "/v1/webauthn/authentications/verify"
            assertions.append(
                json_request(self.server.port, self.token, path, {"credential": assertion})
            )
        return assertions

    def check_answers(self, exchanges: Sequence[Sequence[tuple[bytes, Response]]]) -> None:
        """Every verified answer (warm-up included) names the credential's user and factor, and
        carries a step-up token."""
        for request, response in itertools.chain.from_iterable(exchanges):
            if response.status != 200:
                continue  # counted among the errors
            answer = response.json()
            user_id, factor_id = self.credentials[body_of(request)["credential"]["id"]]
            expected = {"verified": True, "user_id": user_id, "factor_id": factor_id}
            token = answer.pop("assurance_token", None) if isinstance(answer, dict) else None
            if answer != expected or not isinstance(token, str):
                self.outcome.wrong(f"{WEBAUTHN}: expected {expected}, got {answer}")


# --- Backends ---


async def bench_backend(config: Config, work: Path, stamp: str, outcome: Outcome) -> None:
    result = outcome.result
    backend = result.backend
    with sparekey_env(backend) as base_env:
        data_dir = work / backend
        token = sparekey_init(data_dir, base_env)
        port = free_port()
        origin = f"http://localhost:{port}"  # rp id "localhost", the server's default
        env = {**base_env, "SPAREKEY_WEBAUTHN_ORIGINS": origin}
        log_path = RESULTS_DIR / f"webauthn_load-{stamp}-{backend}.log"
        with running(
            f"sparekey ({backend})",
            sparekey_argv(data_dir, port),
            port=port,
            env=env,
            log_path=log_path,
        ) as server:
            try:
                await run_backend(server, token, origin, config, outcome)
            finally:
                server.stop()
                record_exit(result, [server])


async def run_backend(
    server: Server, token: str, origin: str, config: Config, outcome: Outcome
) -> None:
    result = outcome.result
    await wait_ready(server, build_request("GET", server.port, "/healthz", headers={}))
    started = time.perf_counter()
    key = SoftAuthenticator(counter_step=0)  # one device holding every user's passkey
    try:
        accounts = await enroll_users(server.port, token, config.users)
        credentials = await register_credentials(server.port, token, accounts, key, origin)
    except (OSError, EOFError):
        server.check_alive()  # a server that died says so, with its log
        raise
    result.users = len(accounts)
    result.setup_seconds = round(time.perf_counter() - started, 2)
    print(
        f"  {result.backend}: {len(accounts)} users with HOTP and WebAuthn enrolled "
        f"in {result.setup_seconds} s",
        file=sys.stderr,
        flush=True,
    )
    bench = Bench(
        server,
        outcome,
        token=token,
        origin=origin,
        config=config,
        accounts=accounts,
        key=key,
        credentials=credentials,
    )
    for concurrency in config.concurrencies:
        await bench.concurrency(concurrency)


async def run_benchmark(config: Config, stamp: str) -> list[Outcome]:
    """Each backend in turn; a SIGTERM stops the servers like Ctrl-C."""
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="sparekey-bench-") as work:
        for backend in config.backends:
            busy, steal = await background_cpu()
            result = BackendResult(
                backend=backend, background_cpu_pct=busy, background_steal_pct=steal
            )
            outcomes.append(Outcome(result=result))
            print(
                f"{backend}: (before start: host {pct(busy, 0)} busy, {pct(steal, 0)} stolen)",
                file=sys.stderr,
            )
            try:
                await bench_backend(config, Path(work), stamp, outcomes[-1])
            except ServerError as exc:  # reported with the results; the other backends still run
                result.error = str(exc)
                print(f"  {backend}: {exc}", file=sys.stderr)
    return outcomes


# --- Report ---


def problems(outcomes: Sequence[Outcome]) -> list[str]:
    """Everything that makes the figures wrong: answers not verified, errors, server trouble."""
    found = []
    for outcome in outcomes:
        b = outcome.result
        if b.error:
            found.append(f"{b.backend} failed: " + b.error.replace("\n", "\n    "))
        for r in b.runs:
            where = f"{r.backend} {r.workload} c={r.concurrency}"
            if r.verified != r.requests:
                found.append(
                    f"{where}: {r.requests - r.verified} of {r.requests} answers not as expected"
                )
            if r.errors:
                found.append(f"{where}: {r.errors} errors {r.statuses}; e.g. {r.error_samples[:2]}")
        if outcome.warmup_failures:
            found.append(f"{b.backend}: {outcome.warmup_failures} warm-up answers not as expected")
        if outcome.wrong_answers:
            samples = outcome.wrong_samples[:2]
            found.append(f"{b.backend}: {outcome.wrong_answers} answers wrong, e.g. {samples}")
        if outcome.max_challenge_age_seconds >= CHALLENGE_SECONDS:
            found.append(
                f"{b.backend}: challenges were used {outcome.max_challenge_age_seconds:.0f} s old"
            )
        if not b.exited_cleanly:
            found.append(f"{b.backend} server exited with status {b.exit_status}")
        if b.notable_log_lines:
            found.append(f"{b.backend} server log ({b.log_file}) has lines like:")
            found += [f"    {line}" for line in b.notable_log_lines[:10]]
    return found


def print_comparisons(comparisons: Sequence[Comparison]) -> None:
    print(
        f"\nWebAuthn verify next to OTP verify (target: at least {TARGET_PCT:g}% of the OTP rate):"
    )
    print(
        f"{'backend':<9}{'conc':>5}{'otp req/s':>11}{'webauthn req/s':>16}{'ratio':>8}"
        f"{'rounds (min-max)':>18}{'target':>8}{'begin req/s':>13}{'sign-in req/s':>15}"
        f"{'sign-in/otp':>13}"
    )
    for c in comparisons:
        spread = f"{min(c.round_ratio_pct):.0f}-{max(c.round_ratio_pct):.0f}%"
        print(
            f"{c.backend:<9}{c.concurrency:>5}{c.otp_rps:>11.1f}{c.webauthn_rps:>16.1f}"
            f"{pct(c.ratio_pct, 0):>8}{spread:>18}{'met' if c.target_met else 'MISSED':>8}"
            f"{c.begin_rps:>13.1f}{c.sign_in_rps:>15.1f}{pct(c.sign_in_ratio_pct, 0):>13}"
        )


def print_report(outcomes: Sequence[Outcome], config: Config) -> list[str]:
    """The table, the comparison, warnings and checks; returns the problems found."""
    print(f"\n{HOTP_NOTE}")
    print(
        f"{NOTE}\nPer workload and concurrency: {config.rounds} alternating rounds of "
        f"{config.round_requests} requests, each after a warm-up of {config.warmup_requests} "
        f"requests or {config.warmup_seconds:g} s; latencies over all rounds. CPU: server and "
        "client in % of one core; host and steal in % of all cores.\n"
    )
    print_table([r for o in outcomes for r in o.result.runs])
    print_comparisons([c for o in outcomes for c in o.comparisons])
    print_background([o.result for o in outcomes])
    found = problems(outcomes)
    if found:
        print("\nChecks found problems (the figures above are not valid):")
        for line in found:
            print(textwrap.indent(line, "  "))
    else:
        print(
            "\nChecks: every verify answer verified:true for the right user and factor, every "
            "challenge signed, no errors, servers stopped cleanly."
        )
    return found


def write_json(stamp: str, config: Config, outcomes: Sequence[Outcome]) -> Path:
    document = {
        "benchmark": "webauthn_load",
        "started_at": stamp,
        "command": [Path(sys.executable).name, *sys.argv],
        "config": asdict(config),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "client_event_loop": loop_name(),
            "load_average_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "source": source_state(),
        "note": f"{HOTP_NOTE} {NOTE}",
        "target_pct_of_otp": TARGET_PCT,
        "backends": [
            {
                **asdict(o.result),
                "comparisons": [{**asdict(c), "target_met": c.target_met} for c in o.comparisons],
                "rounds": [asdict(r) for r in o.rounds],
                "wrong_answers": o.wrong_answers,
                "wrong_samples": o.wrong_samples,
                "warmup_failures": o.warmup_failures,
                "max_challenge_age_seconds": round(o.max_challenge_age_seconds, 1),
            }
            for o in outcomes
        ],
    }
    path = RESULTS_DIR / f"webauthn_load-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path


# --- Entry point ---


def parse_args(argv: Sequence[str] | None) -> Config:
    parser = argparse.ArgumentParser(
        description="WebAuthn authentication-verify throughput next to OTP verify."
    )
    parser.add_argument("--quick", action="store_true", help="small runs, well under a minute")
    parser.add_argument(
        "--requests", type=int, help="measured requests per workload and concurrency"
    )
    parser.add_argument("--rounds", type=int, help="alternating rounds the requests are split in")
    parser.add_argument("--users", type=int, help="users to enroll per backend")
    parser.add_argument(
        "--concurrency",
        type=positive_ints,
        default=FULL.concurrencies,
        help="comma-separated requests in flight, one series each [1,8]",
    )
    parser.add_argument(
        "--backends",
        default="sqlite",
        help=f"comma-separated, from {','.join(SPAREKEY_BACKENDS)} [sqlite]",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or set(backends) - set(SPAREKEY_BACKENDS):
        parser.error(f"--backends takes names from {','.join(SPAREKEY_BACKENDS)}")
    concurrencies = args.concurrency
    for name in ("requests", "rounds", "users"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} takes a positive integer")
    config = replace(
        config,
        backends=backends,
        concurrencies=concurrencies,
        requests=args.requests or config.requests,
        rounds=args.rounds or config.rounds,
        users=args.users or config.users,
    )
    if config.users < max(config.concurrencies):
        parser.error(f"--users must be at least {max(config.concurrencies)}")
    return config


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    stamp = results_stamp()
    started = time.monotonic()
    outcomes = run(run_benchmark(config, stamp))
    found = print_report(outcomes, config)
    path = write_json(stamp, config, outcomes)
    print(f"\nResults: {path.relative_to(REPO)} ({time.monotonic() - started:.0f} s in all)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
