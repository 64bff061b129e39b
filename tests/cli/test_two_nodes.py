"""Several `sparekey serve` processes on one PostgreSQL and one Redis act as one server.

Three real nodes share a fresh database and Redis; requests are spread over them round-robin, the
way a load balancer spreads them. Every single-use thing (a TOTP step, a backup code, a temporary
access pass, a WebAuthn challenge and sign counter) is spent by one conditional statement in the
database (docs/decisions/0003-replay-protection.md), so of any number of parallel submissions on
any nodes exactly one succeeds; the per-user throttle lives in the same rows, and the per-IP
request limit in Redis.

Redis database 0 is shared with other tests: the only keys these nodes write there are per-IP
limits (random documentation addresses, so no other test's) and per-API-key limits (this
deployment's own random key ids). Requests without a ``context.ip`` are not IP-limited.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.cli.test_cli import SPAREKEY, _free_port
from tests.helpers import pg_database, totp_code
from tests.softauthn import SoftAuthenticator

pytestmark = pytest.mark.postgres

NODES = 3
PARALLEL = 50
FREE_FAILURES = 5  # the default throttle_free_failures
IP_LIMIT = 10  # per minute, for the one test of the shared request limit
ORIGIN = "http://localhost:8000"  # the load balancer's origin, the same for every node
CASES = "/v1/recovery/cases"
WAITING_SECONDS = 2  # recovery_waiting_seconds
VERIFY_WEBAUTHN = "/v1/webauthn/authentications/verify"


@dataclass(frozen=True)
class Cluster:
    clients: list[httpx2.Client]  # one per node, the admin key's; thread-safe
    logs: list[Path]
    env: dict[str, str]

    def node(self, i: int) -> httpx2.Client:
        return self.clients[i % len(self.clients)]

    def audit(self, user_id: str, event: str) -> list[dict[str, Any]]:
        page = self.node(0).get("/v1/audit", params={"user": user_id, "event": event, "limit": 500})
        assert page.status_code == 200, page.text
        assert page.json()["next_cursor"] is None
        return list(page.json()["events"])

    def assert_quiet(self) -> None:
        """No node logged an error or a traceback (a 5xx is logged with its traceback)."""
        for log in self.logs:
            output = log.read_text(encoding="utf-8", errors="replace")
            assert "Traceback" not in output, output
            assert "ERROR" not in output, output


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with pg_database("sparekey_nodes") as url:
        yield url


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("nodes")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPAREKEY_")}
    env |= {
        "SPAREKEY_DATA_DIR": str(home / "data"),
        "SPAREKEY_DATABASE_URL": database,
        "SPAREKEY_REDIS_URL": "redis://127.0.0.1:6379/0",
        "SPAREKEY_RATE_LIMIT_IP_REQUESTS": str(IP_LIMIT),
        "SPAREKEY_THROTTLE_BASE_DELAY_SECONDS": "30",
        "SPAREKEY_RECOVERY_WAITING_SECONDS": str(WAITING_SECONDS),
        "SPAREKEY_WEBAUTHN_RP_ID": "localhost",
        "SPAREKEY_WEBAUTHN_ORIGINS": ORIGIN,
    }
    init = subprocess.run([SPAREKEY, "init"], env=env, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    token = init.stdout.strip().splitlines()[-1]
    ports = [_free_port() for _ in range(NODES)]
    logs = [home / f"node{i}.log" for i in range(NODES)]
    processes = []
    for port, log in zip(ports, logs, strict=True):
        with log.open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [SPAREKEY, "serve", "--port", str(port)],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx2.Limits(max_connections=PARALLEL, max_keepalive_connections=PARALLEL)
    clients = [
        httpx2.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=30
        )
        for port in ports
    ]
    try:
        deadline = time.monotonic() + 30
        for client, process in zip(clients, processes, strict=True):
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    logs_read = "\n".join(log.read_text(errors="replace") for log in logs)
                    pytest.fail(f"the nodes did not start within 30 s:\n{logs_read}")
                time.sleep(0.1)
        yield Cluster(clients=clients, logs=logs, env=env)
    finally:
        for client in clients:
            client.close()
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def spread(
    cluster: Cluster,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    method: str = "POST",
    times: int = PARALLEL,
    headers: dict[str, str] | None = None,
) -> list[httpx2.Response]:
    """Send the same request ``times`` times at once, round-robin over the nodes, from as many
    threads released together by a barrier; the answers, in no particular order."""
    barrier = threading.Barrier(times)
    answers: list[httpx2.Response] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def send(i: int) -> None:
        barrier.wait()
        try:
            answer = cluster.node(i).request(method, path, json=body, headers=headers)
        except BaseException as exc:  # reported in the test's thread below
            with lock:
                errors.append(exc)
            return
        with lock:
            answers.append(answer)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return answers


def outcomes(answers: list[httpx2.Response]) -> Counter[str]:
    """Each answer as ``verified`` / ``not verified`` / its status and problem type."""
    seen: Counter[str] = Counter()
    for answer in answers:
        assert answer.status_code < 500, answer.text
        if answer.status_code == 200 and "verified" in answer.json():
            seen["verified" if answer.json()["verified"] else "not verified"] += 1
        elif answer.status_code == 200:
            seen["200"] += 1
        else:
            seen[f"{answer.status_code} {answer.json()['type']}"] += 1
    return seen


def new_user(cluster: Cluster, prefix: str) -> str:
    user_id = f"{prefix}-{secrets.token_hex(4)}"
    made = cluster.node(0).post("/v1/users", json={"id": user_id})
    assert made.status_code == 201, made.text
    return user_id


def test_one_totp_code_sent_fifty_times_to_three_nodes_verifies_once(cluster: Cluster) -> None:
    user_id = new_user(cluster, "totp")
    factor = cluster.node(1).post(f"/v1/users/{user_id}/factors", json={"type": "totp"}).json()
    now = datetime.now(UTC)
    confirmed = cluster.node(2).post(
        f"/v1/users/{user_id}/factors/{factor['id']}/confirm",
        json={"code": totp_code(factor["secret"], now)},
    )
    assert confirmed.status_code == 200, confirmed.text
    # The next step's code: inside the window for the next minute, and not the step confirmed.
    code = totp_code(factor["secret"], now + timedelta(seconds=30))

    seen = outcomes(spread(cluster, f"/v1/users/{user_id}/verify", {"code": code}))

    # One wins the step; every loser is a replay, which counts as a wrong code, so the
    # throttle answers the first `free + 1` of them and refuses the rest.
    assert seen == {
        "verified": 1,
        "not verified": FREE_FAILURES + 1,
        "429 /problems/too-many-attempts": PARALLEL - FREE_FAILURES - 2,
    }
    assert len(cluster.audit(user_id, "verify.succeeded")) == 1
    assert len(cluster.audit(user_id, "verify.failed")) == FREE_FAILURES + 1
    cluster.assert_quiet()


def test_one_backup_code_sent_fifty_times_to_three_nodes_is_spent_once(cluster: Cluster) -> None:
    user_id = new_user(cluster, "backup")
    made = cluster.node(1).post(f"/v1/users/{user_id}/backup-codes")
    assert made.status_code == 201, made.text
    codes = made.json()["codes"]
    count = len(codes)

    answers = spread(cluster, f"/v1/users/{user_id}/verify", {"code": codes[0]})

    # Backup codes are not guessable: the losers cost no throttle budget and are all answered.
    assert outcomes(answers) == {"verified": 1, "not verified": PARALLEL - 1}
    (won,) = [a.json() for a in answers if a.json()["verified"]]
    assert (won["factor_type"], won["backup_codes_remaining"]) == ("backup_code", count - 1)
    assert [e["details"]["remaining"] for e in cluster.audit(user_id, "backup_code.used")] == [
        count - 1
    ]
    again = cluster.node(2).post(f"/v1/users/{user_id}/verify", json={"code": codes[0]})
    assert again.json() == {"verified": False}
    other = cluster.node(0).post(f"/v1/users/{user_id}/verify", json={"code": codes[1]})
    assert other.json()["backup_codes_remaining"] == count - 2, "decremented by exactly one"
    cluster.assert_quiet()


def operator_token(cluster: Cluster, name: str, role: str) -> dict[str, str]:
    made = subprocess.run(
        [SPAREKEY, "admin", "create", name, "--role", role],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}


def test_one_temporary_access_pass_redeemed_fifty_times_on_three_nodes_works_once(
    cluster: Cluster,
) -> None:
    user_id = new_user(cluster, "tap")
    suffix = secrets.token_hex(3)
    hank = operator_token(cluster, f"hank{suffix}", "helpdesk")
    ada = operator_token(cluster, f"ada{suffix}", "admin")

    # The helpdesk opens and verifies the case, an admin approves it: each step on another node.
    opened = cluster.node(0).post(
        CASES, json={"user_id": user_id, "reason": "phone lost"}, headers=hank
    )
    assert opened.status_code == 201, opened.text
    case = f"{CASES}/{opened.json()['id']}"
    evidence = {"evidence": ["government_id", "video_call"]}
    verified = cluster.node(1).post(f"{case}/identity", json=evidence, headers=hank)
    assert verified.json()["state"] == "identity_verified", verified.text
    approved = cluster.node(2).post(f"{case}/approve", headers=ada)
    assert approved.json()["state"] == "waiting", approved.text
    waiting_until = datetime.fromisoformat(approved.json()["waiting_until"])
    time.sleep(max(0.0, (waiting_until - datetime.now(UTC)).total_seconds()) + 0.1)

    # The wait is over: the case becomes ready when next read, whichever node reads it first.
    reads = spread(cluster, case, method="GET", headers=hank)
    assert {(r.status_code, r.json().get("state")) for r in reads} == {(200, "ready")}, [
        r.text for r in reads if r.status_code != 200
    ][:1]
    assert len(cluster.audit(user_id, "recovery.ready")) == 1
    issued = cluster.node(0).post(f"{case}/pass", json={}, headers=hank)
    assert issued.status_code == 200, issued.text

    answers = spread(
        cluster,
        f"/v1/users/{user_id}/temporary-access/redeem",
        {"pass": issued.json()["access_pass"]},
    )

    assert outcomes(answers) == {"200": 1, "403 /problems/forbidden": PARALLEL - 1}
    (won,) = [a.json() for a in answers if a.status_code == 200]
    assert won["case_id"] == opened.json()["id"]
    assert won["enrollment_token"]
    assert len(cluster.audit(user_id, "recovery.pass_redeemed")) == 1
    assert len(cluster.audit(user_id, "recovery.pass_refused")) == PARALLEL - 1
    shown = cluster.node(1).get(case, headers=hank).json()
    assert shown["pass_redeemed_at"] is not None
    cluster.assert_quiet()


def test_one_throttle_budget_across_nodes(cluster: Cluster) -> None:
    user_id = new_user(cluster, "throttle")
    factor = cluster.node(0).post(f"/v1/users/{user_id}/factors", json={"type": "totp"}).json()
    confirmed = cluster.node(1).post(
        f"/v1/users/{user_id}/factors/{factor['id']}/confirm",
        json={"code": totp_code(factor["secret"], datetime.now(UTC))},
    )
    assert confirmed.status_code == 200, confirmed.text

    # The user's budget lives in the database: wrong codes spread over the nodes lock it after
    # exactly `free + 1` answers, whichever nodes they reached.
    answers = [
        cluster.node(i).post(f"/v1/users/{user_id}/verify", json={"code": "000000"})
        for i in range(FREE_FAILURES + 2)
    ]
    assert [a.status_code for a in answers[:-1]] == [200] * (FREE_FAILURES + 1)
    assert answers[-1].status_code == 429
    assert answers[-1].json()["type"] == "/problems/too-many-attempts"
    assert 25 <= int(answers[-1].headers["Retry-After"]) <= 30
    for i in range(NODES):
        throttle = cluster.node(i).get(f"/v1/users/{user_id}").json()["throttle"]
        assert throttle["failures"] == FREE_FAILURES + 1
        assert throttle["locked_until"] is not None

    # The same budget under a burst: fifty wrong codes at once on a fresh user.
    burst = new_user(cluster, "burst")
    factor = cluster.node(2).post(f"/v1/users/{burst}/factors", json={"type": "totp"}).json()
    confirmed = cluster.node(0).post(
        f"/v1/users/{burst}/factors/{factor['id']}/confirm",
        json={"code": totp_code(factor["secret"], datetime.now(UTC))},
    )
    assert confirmed.status_code == 200, confirmed.text
    seen = outcomes(spread(cluster, f"/v1/users/{burst}/verify", {"code": "000000"}))
    assert seen == {
        "not verified": FREE_FAILURES + 1,
        "429 /problems/too-many-attempts": PARALLEL - FREE_FAILURES - 1,
    }
    assert len(cluster.audit(burst, "throttle.engaged")) == 1
    cluster.assert_quiet()


def test_one_request_limit_per_ip_across_nodes(cluster: Cluster) -> None:
    user_id = new_user(cluster, "ratelimit")
    # A documentation address no other test uses: its limit starts whole in the shared Redis.
    ip = f"2001:db8:{secrets.token_hex(2)}::{secrets.token_hex(2)}"
    answers = [
        cluster.node(i).post(
            f"/v1/users/{user_id}/verify", json={"code": "123456", "context": {"ip": ip}}
        )
        for i in range(IP_LIMIT + 4)
    ]
    assert [a.status_code for a in answers] == [200] * IP_LIMIT + [429] * 4
    assert {a.json()["type"] for a in answers[IP_LIMIT:]} == {"/problems/rate-limited"}
    other_ip = f"2001:db8:{secrets.token_hex(2)}::{secrets.token_hex(2)}"
    elsewhere = cluster.node(0).post(
        f"/v1/users/{user_id}/verify", json={"code": "123456", "context": {"ip": other_ip}}
    )
    assert elsewhere.status_code == 200, "the limit is per IP address"


def register(cluster: Cluster, key: SoftAuthenticator, user_id: str, *, begin_on: int) -> str:
    """A registration begun on one node and finished on the next; the new factor's id."""
    options = cluster.node(begin_on).post(f"/v1/users/{user_id}/webauthn/registrations")
    assert options.status_code == 200, options.text
    credential = key.create(options.json()["options"], origin=ORIGIN)
    made = cluster.node(begin_on + 1).post(
        f"/v1/users/{user_id}/webauthn/registrations/verify", json={"credential": credential}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def assertion(cluster: Cluster, key: SoftAuthenticator, *, begin_on: int) -> dict[str, Any]:
    """The authenticator's answer to a challenge one node made."""
    begun = cluster.node(begin_on).post("/v1/webauthn/authentications", json={})
    assert begun.status_code == 200, begun.text
    return key.get(begun.json()["options"], origin=ORIGIN)


def test_webauthn_ceremonies_begun_on_one_node_finish_on_another(cluster: Cluster) -> None:
    user_id = new_user(cluster, "key")
    key = SoftAuthenticator(attachment="cross-platform")  # a security key: counts every use
    factor_id = register(cluster, key, user_id, begin_on=0)

    signed = assertion(cluster, key, begin_on=1)
    answer = cluster.node(2).post(VERIFY_WEBAUTHN, json={"credential": signed})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["verified"], answer.json()["user_id"]) == (True, user_id)
    assert answer.json()["factor_id"] == factor_id

    # The same assertion replayed on another node: its challenge is gone.
    replayed = cluster.node(0).post(VERIFY_WEBAUTHN, json={"credential": signed})
    assert replayed.json() == {"verified": False, "user_id": None, "factor_id": None}
    # A clone (the same key, its counter behind) answering a fresh challenge on another node.
    for credential_id in key.credentials:
        key.set_sign_count(credential_id, 0)
    cloned = cluster.node(0).post(
        VERIFY_WEBAUTHN, json={"credential": assertion(cluster, key, begin_on=2)}
    )
    assert cloned.json()["verified"] is False
    assert len(cluster.audit(user_id, "webauthn.counter_regressed")) == 1
    assert len(cluster.audit(user_id, "verify.succeeded")) == 1
    reasons = [e["details"]["reason"] for e in cluster.audit(user_id, "verify.failed")]
    assert "unknown, expired or reused challenge" in reasons
    cluster.assert_quiet()


def test_one_passkey_assertion_sent_fifty_times_to_three_nodes_signs_in_once(
    cluster: Cluster,
) -> None:
    user_id = new_user(cluster, "passkey")
    # Most passkeys keep their counter at 0: only the single-use challenge stops a replay.
    passkey = SoftAuthenticator(counter_step=0, backup_eligible=True, backed_up=True)
    factor_id = register(cluster, passkey, user_id, begin_on=1)

    answers = spread(
        cluster, VERIFY_WEBAUTHN, {"credential": assertion(cluster, passkey, begin_on=2)}
    )

    assert outcomes(answers) == {"verified": 1, "not verified": PARALLEL - 1}
    succeeded = cluster.audit(user_id, "verify.succeeded")
    assert [e["details"]["factor_id"] for e in succeeded] == [factor_id]
    reasons = Counter(e["details"]["reason"] for e in cluster.audit(user_id, "verify.failed"))
    assert reasons == {"unknown, expired or reused challenge": PARALLEL - 1}
    cluster.assert_quiet()
