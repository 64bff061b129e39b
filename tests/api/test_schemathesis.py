"""Every operation of the OpenAPI document, fuzzed by schemathesis with every check it has.

A real ``sparekey serve`` on SQLite gets users with every kind of factor, device tokens, vault
backups and recovery cases in each state, all made through the API. ``schemathesis.toml`` at the
repository root names them (user ids as written there, the ids the server made through the
environment variables this test sets) so that the fuzzer reaches real resources, not 404s. Email
and SMS codes go to an SMTP server and a Twilio-like provider on loopback.

The run is seeded: a failure names its seed, and ``FUZZ_SEED=<seed>`` repeats the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx2
import pytest

from tests.cli.test_cli import SPAREKEY, _free_port
from tests.helpers import hotp_code, totp_code
from tests.helpers_delivery import ACCOUNT, TOKEN, Provider, twilio_api
from tests.helpers_notifications import LOOPBACK, SmtpReceiver
from tests.softauthn import SoftAuthenticator

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
SEED = int(os.environ.get("FUZZ_SEED", "20260115"))
MAX_EXAMPLES = 12  # per operation and phase; with --workers 2 the run takes 30-90 s on two cores
OVERRIDE = {"Sparekey-Assurance": "override", "Sparekey-Override-Reason": "fuzzing setup"}
PHONE = "+447911123456"
METHODS = ("get", "put", "post", "patch", "delete")


@dataclass(frozen=True)
class Server:
    url: str
    log: Path
    tokens: dict[str, str]  # operator name: their personal admin-scope token


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("SPAREKEY_", "FUZZ_"))}


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    with SmtpReceiver() as receiver:
        yield receiver


@pytest.fixture
def sms() -> Iterator[Provider]:
    with Provider(twilio_api()) as provider:
        yield provider


@pytest.fixture
def server(tmp_path: Path, smtp: SmtpReceiver, sms: Provider) -> Iterator[Server]:
    env = _environment() | {
        "SPAREKEY_DATA_DIR": str(tmp_path / "data"),
        # Fuzzing sends thousands of requests from one address with one key: without room the
        # answers would be nearly all 429 and nothing behind the limits would be tested.
        "SPAREKEY_RATE_LIMIT_KEY_REQUESTS": "1000000",
        "SPAREKEY_RATE_LIMIT_IP_REQUESTS": "1000000",
        # What the fuzzer is given must last the run: pending factors, assurance tokens.
        "SPAREKEY_PENDING_FACTOR_TTL_SECONDS": "86400",
        "SPAREKEY_ASSURANCE_SECONDS": "3600",
        "SPAREKEY_RECOVERY_WAITING_SECONDS": "0",  # an approved case is ready at once
        "SPAREKEY_FALLBACK_DESTINATION_WAIT_SECONDS": "0",  # a second SMS/email factor too
        "SPAREKEY_SMTP_HOST": LOOPBACK,
        "SPAREKEY_SMTP_PORT": str(smtp.port),
        "SPAREKEY_SMTP_STARTTLS": "false",
        "SPAREKEY_SMTP_FROM": "security@example.com",
        "SPAREKEY_SMS_PROVIDER": "twilio",
        "SPAREKEY_TWILIO_ACCOUNT_SID": ACCOUNT,
        "SPAREKEY_TWILIO_AUTH_TOKEN": TOKEN,
        "SPAREKEY_TWILIO_FROM": "+15005550006",
        "SPAREKEY_TWILIO_BASE_URL": sms.base_url,
        "SPAREKEY_DELIVERY_RETRIES": "0",
        "SPAREKEY_RUN_WORKER": "false",  # notifications stay queued; nothing here reads them
    }
    subprocess.run([SPAREKEY, "init"], env=env, capture_output=True, check=True, timeout=60)
    tokens = {}
    for name in ("fuzzer", "seeder", "approver"):  # recovery takes operators, and four eyes
        made = subprocess.run(
            [SPAREKEY, "admin", "create", name, "--role", "admin"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        tokens[name] = made.stdout.strip().splitlines()[-1]
    port = _free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [SPAREKEY, "serve", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"the server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield Server(url=url, log=log, tokens=tokens)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)


# -- What the fuzzer is given, made through the API ------------------------------------------------


def _ok(response: httpx2.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.text}"
    return response.json() if response.content else None


class Seeder:
    """The operator ``seeder`` making users, factors and cases; ``approver``, a second admin,
    approves cases. Step-up is an administrator's (audited) override throughout."""

    def __init__(self, server: Server, smtp: SmtpReceiver, sms: Provider) -> None:
        self.url = server.url
        self.client = httpx2.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.tokens['seeder']}", **OVERRIDE},
        )
        self.approver = httpx2.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.tokens['approver']}"}
        )
        self.smtp = smtp
        self.sms = sms

    def close(self) -> None:
        self.client.close()
        self.approver.close()

    def user(self, user_id: str) -> None:
        body = {"id": user_id, "display_name": user_id.title(), "email": f"{user_id}@example.com"}
        _ok(self.client.post("/v1/users", json=body), 201)

    def enroll(self, user_id: str, body: dict[str, str], **headers: str) -> dict[str, Any]:
        factor = self.client.post(f"/v1/users/{user_id}/factors", json=body, headers=headers)
        enrolled: dict[str, Any] = _ok(factor, 201)
        return enrolled

    def confirm(self, user_id: str, factor_id: str, code: str, **headers: str) -> str:
        path = f"/v1/users/{user_id}/factors/{factor_id}/confirm"
        _ok(self.client.post(path, json={"code": code}, headers=headers))
        return factor_id

    def totp(self, user_id: str, **headers: str) -> str:
        factor = self.enroll(user_id, {"type": "totp"}, **headers)
        code = totp_code(factor["secret"], datetime.now(UTC))
        return self.confirm(user_id, factor["id"], code, **headers)

    def hotp(self, user_id: str) -> str:
        factor = self.enroll(user_id, {"type": "hotp"})
        return self.confirm(user_id, factor["id"], hotp_code(factor["secret"], 0))

    def email(self, user_id: str) -> str:
        address = f"{user_id}@example.com"
        factor = self.enroll(user_id, {"type": "email", "address": address})
        [code] = [
            m.group(1)
            for mail in self.smtp.mails
            if mail.rcpt_tos == [address]
            for m in [re.search(r"code is ([0-9]{6})\.", mail.message.get_content())]
            if m
        ]
        return self.confirm(user_id, factor["id"], code)

    def phone(self, user_id: str) -> str:
        factor = self.enroll(user_id, {"type": "sms", "phone": PHONE})
        [code] = [
            m.group(1)
            for request in self.sms.requests
            if request.form()["To"] == PHONE
            for m in [re.search(r"#([0-9]{6})$", request.form()["Body"])]
            if m
        ]
        return self.confirm(user_id, factor["id"], code)

    def passkey(self, user_id: str) -> None:
        path = f"/v1/users/{user_id}/webauthn/registrations"
        options = _ok(self.client.post(path))["options"]
        origin = self.url.replace("127.0.0.1", "localhost")  # the relying party is localhost
        credential = SoftAuthenticator().create(options, origin=origin)
        _ok(self.client.post(f"{path}/verify", json={"credential": credential}), 201)

    def device_token(self, user_id: str, name: str) -> dict[str, Any]:
        path = f"/v1/users/{user_id}/device-tokens"
        made: dict[str, Any] = _ok(self.client.post(path, json={"name": name}), 201)
        return made

    def vault_backups(self, user_id: str, device_token: str, count: int) -> None:
        headers = {
            "Authorization": f"Bearer {device_token}",
            "Content-Type": "application/octet-stream",
        }
        condition = {"If-None-Match": "*"}
        with httpx2.Client(base_url=self.url, headers=headers) as vault:
            for version in range(1, count + 1):
                stored = vault.put(
                    f"/v1/users/{user_id}/vault-backups/latest",
                    content=f"vault {version}".encode(),
                    headers=condition,
                )
                assert stored.status_code == 201, stored.text
                condition = {"If-Match": stored.headers["ETag"]}

    def case(self, user_id: str, *, approval: str = "admins") -> str:
        body = {"user_id": user_id, "approval": approval, "reason": "lost phone"}
        return str(_ok(self.client.post("/v1/recovery/cases", json=body), 201)["id"])

    def verified_case(self, user_id: str, *, approval: str = "admins") -> str:
        case_id = self.case(user_id, approval=approval)
        evidence = {"evidence": ["government_id", "video_call"]}
        _ok(self.client.post(f"/v1/recovery/cases/{case_id}/identity", json=evidence))
        return case_id

    def ready_case(self, user_id: str) -> str:
        case_id = self.verified_case(user_id)
        case = _ok(self.approver.post(f"/v1/recovery/cases/{case_id}/approve"))
        assert case["state"] == "ready", case
        return case_id

    def redeemed_case(self, user_id: str) -> str:
        """A ready case whose pass the user redeemed and enrolled a new factor with: it only
        waits for the helpdesk to complete it."""
        case_id = self.ready_case(user_id)
        issued = _ok(self.client.post(f"/v1/recovery/cases/{case_id}/pass", json={}))
        redeem = f"/v1/users/{user_id}/temporary-access/redeem"
        redeemed = _ok(self.client.post(redeem, json={"pass": issued["access_pass"]}))
        self.totp(user_id, **{"Sparekey-Assurance": redeemed["enrollment_token"]})
        return case_id


def seed(server: Server, smtp: SmtpReceiver, sms: Provider) -> dict[str, str]:
    """Everything ``schemathesis.toml`` names; the environment variables that carry the ids and
    the two credentials to schemathesis."""
    s = Seeder(server, smtp, sms)
    try:
        ids = {"FUZZ_API_KEY": server.tokens["fuzzer"]}
        for user_id in ("alice", "bob", "carol", "dave", "pat", "doomed"):
            s.user(user_id)

        # alice has every kind of factor, device tokens, vault backups and trusted contacts.
        s.passkey("alice")
        ids["FUZZ_TOTP_FACTOR"] = s.totp("alice")
        ids["FUZZ_HOTP_FACTOR"] = s.hotp("alice")
        backup_codes = _ok(s.client.post("/v1/users/alice/backup-codes"), 201)["codes"]
        device = s.device_token("alice", "Laptop")
        ids["FUZZ_DEVICE_TOKEN"] = device["token"]
        s.vault_backups("alice", device["token"], 3)
        _ok(s.client.put("/v1/users/alice/trusted-contacts", json={"contacts": ["bob", "carol"]}))
        verified = _ok(s.client.post("/v1/users/alice/verify", json={"code": backup_codes[0]}))
        ids["FUZZ_CONTACT_ASSURANCE"] = verified["assurance_token"]

        # bob has nothing active (changes need no step-up): factors and a token to remove.
        s.enroll("bob", {"type": "totp"})
        s.enroll("bob", {"type": "hotp"})
        s.device_token("bob", "Desktop")
        # carol has email and SMS only; dave a TOTP factor to lose; pat one to confirm.
        ids["FUZZ_EMAIL_FACTOR"] = s.email("carol")
        ids["FUZZ_SMS_FACTOR"] = s.phone("carol")
        ids["FUZZ_LOST_FACTOR"] = s.totp("dave")
        ids["FUZZ_PENDING_FACTOR"] = s.enroll("pat", {"type": "totp"})["id"]

        # Recovery cases in each state a step starts from, one user each.
        for user_id in ("erin", "frank", "grace", "heidi", "ivan", "judy", "ken", "mallory"):
            s.user(user_id)
        s.email("erin")  # where the case's fallback code goes
        ids["FUZZ_REQUESTED_CASE"] = s.case("erin")
        ids["FUZZ_VERIFIED_CASE"] = s.verified_case("frank")
        _ok(s.client.put("/v1/users/grace/trusted-contacts", json={"contacts": ["alice", "bob"]}))
        ids["FUZZ_CONTACTS_CASE"] = s.verified_case("grace", approval="contacts")
        ids["FUZZ_DENIED_CASE"] = s.case("heidi")
        ids["FUZZ_CANCELLED_CASE"] = s.case("ivan")
        ids["FUZZ_READY_CASE"] = s.ready_case("judy")
        ids["FUZZ_REDEEMED_CASE"] = s.redeemed_case("ken")
        s.case("mallory")
        return ids
    finally:
        s.close()


# -- The run -------------------------------------------------------------------------------------


def test_every_operation_passes_every_check(
    tmp_path: Path, server: Server, smtp: SmtpReceiver, sms: Provider
) -> None:
    ids = seed(server, smtp, sms)
    document = httpx2.get(f"{server.url}/openapi.json").json()
    junit = tmp_path / "junit.xml"
    run = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-junit-path",
            str(junit),
        ],
        env=_environment() | ids,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = run.stdout + run.stderr
    server_log = server.log.read_text()
    assert run.returncode == 0, f"{report}\n-- the server's log --\n{server_log[-5000:]}"
    assert "Traceback" not in server_log, server_log[-5000:]

    # Every operation of the document ran (stateful sequences are one more test case), and none
    # was skipped or stopped by an error.
    operations = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    cases = list(ElementTree.parse(junit).iter("testcase"))  # noqa: S314 (our own report)
    assert {case.get("name") for case in cases} == operations | {"Stateful tests"}, report
    for case in cases:
        assert case.find("skipped") is None, (case.get("name"), report)
        assert case.find("error") is None, (case.get("name"), report)
        assert case.find("failure") is None, (case.get("name"), report)
    assert server.tokens["fuzzer"] not in junit.read_text(), "credentials are filtered out"
