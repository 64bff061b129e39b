"""Rolling upgrades: the previous release's server and this code's, on one database at once.

The previous release's source comes from git (``git archive`` of :data:`RELEASE_COMMIT`) and runs
with this virtualenv's interpreter and ``PYTHONPATH`` pointing at it; each test checks that the old
code, not this checkout, is what those processes import. On PostgreSQL and Redis:

1. the old release initialises a fresh database and serves; a user enrols TOTP and backup codes;
2. this code migrates the database (``sparekey migrate``) while the old node serves;
3. the old node, a freshly started old node and a node of this code serve side by side: codes
   verify, a backup code is spent once across versions, a factor enrolled on one version is
   confirmed on the other, each reads the audit records the other wrote, and the chain they
   sealed together verifies;
4. what a future release will do to the schema, played with synthetic migrations
   (tests/operations/synthetic.py) since no real one exists yet: an expand migration applied while
   the old nodes serve leaves them serving and lets a new old node start (saying so in one line);
   after a contract migration, which raises the oldest supported release, an old node refuses to
   start with one line naming the release it needs. The synthetic migrations stand for real ones;
   the start-up check they exercise is the old release's own code.

Steps 2 and 3 run on SQLite too (one file, several processes).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

import sparekey
from sparekey.runtime import Sparekey
from sparekey.settings import load_settings
from sparekey.storage.database import Database
from tests.cli.test_cli import SPAREKEY, _free_port
from tests.helpers import pg_database, totp_code
from tests.operations.synthetic import ADD_NOTES, NOTE_NOT_NULL, synthetic_migrations

RELEASE = "0.2.0"
RELEASE_COMMIT = "6adba80e2558eacdd9e8b2b2d0cd099b38e79c12"
"""The commit tagged v0.2.0: the first release that can take part in a rolling upgrade."""

REPOSITORY = Path(__file__).resolve().parents[2]
START_SECONDS = 30


def previous_release(into: Path) -> Path:
    """The ``src`` directory of :data:`RELEASE_COMMIT`, extracted from this clone's history."""
    if shutil.which("git") is None:
        pytest.fail("the rolling-upgrade test needs git, to read the previous release's source")
    archive = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", "--format=tar", RELEASE_COMMIT, "src"],
        capture_output=True,
        timeout=60,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"commit {RELEASE_COMMIT} (v{RELEASE}) is not in this clone; fetch the full "
            "history (git fetch --unshallow) to run the rolling-upgrade test"
        )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


@pytest.fixture(scope="module")
def old_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return previous_release(tmp_path_factory.mktemp("release"))


@dataclass
class Deployment:
    """Nodes of two versions on one database and one data directory (the key file)."""

    env: dict[str, str]
    old_source: Path
    home: Path
    token: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    clients: list[httpx2.Client] = field(default_factory=list)

    def old_env(self) -> dict[str, str]:
        return self.env | {"PYTHONPATH": str(self.old_source)}

    def old(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The previous release's command line."""
        return subprocess.run(
            [sys.executable, "-m", "sparekey.cli.main", *args],
            env=self.old_env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def new(self, *args: str) -> subprocess.CompletedProcess[str]:
        """This code's command line."""
        return subprocess.run(
            [SPAREKEY, *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self, *old: bool) -> list[httpx2.Client]:
        """Nodes of the previous release (True) or of this code (False), started together and
        serving; their clients."""
        launched = []
        for is_old in old:
            port = _free_port()
            log = self.home / f"node{len(self.processes)}-{'old' if is_old else 'new'}.log"
            command = [sys.executable, "-m", "sparekey.cli.main"] if is_old else [SPAREKEY]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [*command, "serve", "--port", str(port)],
                    env=self.old_env() if is_old else self.env,
                    cwd=self.home,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            self.processes.append(process)
            client = httpx2.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=30,
            )
            self.clients.append(client)
            launched.append((is_old, process, client, log))
        deadline = time.monotonic() + START_SECONDS
        for is_old, process, client, log in launched:
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"a node did not start: {log.read_text(errors='replace')}")
                time.sleep(0.1)
            version = client.get("/openapi.json").json()["info"]["version"]
            assert version == (RELEASE if is_old else sparekey.__version__), log.read_text()
        return [client for _, _, client, _ in launched]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            process.wait(timeout=30)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("*.log")))


def deployment(home: Path, old_source: Path, database_url: str, **env: str) -> Deployment:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SPAREKEY_", "PYTHON"))}
    base |= {"SPAREKEY_DATA_DIR": str(home / "data"), **env}
    if database_url:
        base["SPAREKEY_DATABASE_URL"] = database_url
    return Deployment(env=base, old_source=old_source, home=home)


@pytest.fixture
def postgres() -> Iterator[str]:
    with pg_database("sparekey_rolling") as url:
        yield url


def test_the_old_release_is_what_the_old_nodes_import(old_source: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    probe = subprocess.run(
        [sys.executable, "-c", "import sparekey; print(sparekey.__version__, sparekey.__file__)"],
        env=env | {"PYTHONPATH": str(old_source)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    version, where = probe.stdout.split()
    assert version == RELEASE
    assert Path(where).is_relative_to(old_source)
    assert (old_source / "sparekey" / "storage" / "migrations" / "versions").is_dir()


# -- the scenario -------------------------------------------------------------------------------


def enrol(node: httpx2.Client, user_id: str, at: datetime) -> tuple[str, list[str], str]:
    """A user with a TOTP factor confirmed by the code of ``at`` and backup codes: (seed,
    codes, assurance token)."""
    assert node.post("/v1/users", json={"id": user_id}).status_code == 201
    factor = node.post(f"/v1/users/{user_id}/factors", json={"type": "totp"}).json()
    confirmed = node.post(
        f"/v1/users/{user_id}/factors/{factor['id']}/confirm",
        json={"code": totp_code(factor["secret"], at)},
    )
    assert confirmed.status_code == 200, confirmed.text
    assurance = confirmed.json()["assurance_token"]
    codes = node.post(
        f"/v1/users/{user_id}/backup-codes", headers={"Sparekey-Assurance": assurance}
    )
    assert codes.status_code == 201, codes.text
    return factor["secret"], codes.json()["codes"], assurance


def verify(node: httpx2.Client, user_id: str, code: str) -> dict[str, Any]:
    answer = node.post(f"/v1/users/{user_id}/verify", json={"code": code})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def events(node: httpx2.Client, user_id: str) -> list[str]:
    page = node.get("/v1/audit", params={"user": user_id, "limit": 500})
    assert page.status_code == 200, page.text
    return [e["event"] for e in page.json()["events"]]


def serve_side_by_side(old: httpx2.Client, fresh_old: httpx2.Client, new: httpx2.Client) -> None:
    """Step 3: both versions write, and each reads what the other wrote."""
    # Three time steps inside the window (one step either side): confirm with the previous one.
    # The servers read the real clock, so start early in a step: the scenario then ends before
    # the next one, and "the previous step" means the same step to them as to this test.
    into_step = time.time() % 30
    if into_step > 15:
        time.sleep(30 - into_step + 0.1)
    now = datetime.now(UTC)
    secret, codes, _ = enrol(old, "alice", now - timedelta(seconds=30))
    # A code verified by the old release is a replay for this code's node, and the other way.
    assert verify(old, "alice", totp_code(secret, now))["verified"] is True
    assert verify(new, "alice", totp_code(secret, now)) == {"verified": False}
    later = totp_code(secret, now + timedelta(seconds=30))
    answer = verify(new, "alice", later)
    assert answer["verified"] is True
    assert verify(fresh_old, "alice", later) == {"verified": False}
    # A backup code spent on this code's node is spent for the old release too.
    spent = verify(new, "alice", codes[0])
    assert spent["backup_codes_remaining"] == len(codes) - 1
    assert verify(fresh_old, "alice", codes[0]) == {"verified": False}
    assert verify(old, "alice", codes[1])["backup_codes_remaining"] == len(codes) - 2
    # A factor enrolled through the old release (stepped up by this code's verification) is
    # confirmed through this code's node and verifies on the old one.
    step_up = {"Sparekey-Assurance": answer["assurance_token"]}
    second = fresh_old.post("/v1/users/alice/factors", json={"type": "totp"}, headers=step_up)
    assert second.status_code == 201, second.text
    seed = second.json()["secret"]
    confirmed = new.post(
        f"/v1/users/alice/factors/{second.json()['id']}/confirm",
        json={"code": totp_code(seed, datetime.now(UTC))},
        headers=step_up,
    )
    assert confirmed.status_code == 200, confirmed.text
    factors = old.get("/v1/users/alice/factors").json()["factors"]
    assert {f["id"] for f in factors if f["status"] == "active"} >= {second.json()["id"]}
    # Each version's audit view holds what the other recorded.
    for node in (old, fresh_old, new):
        seen = events(node, "alice")
        assert seen.count("backup_code.used") == 2, seen
        assert "factor.confirmed" in seen, seen
        assert "verify.succeeded" in seen, seen


def chain_verifies(nodes: Deployment) -> None:
    """The audit chain that old and new sealers built together verifies (with this code)."""
    settings = load_settings(
        Path(nodes.env["SPAREKEY_DATA_DIR"]),
        database_url=nodes.env.get("SPAREKEY_DATABASE_URL") or None,
    )
    app = Sparekey.open(settings)
    try:
        app.audit.seal_all()
        report = app.audit.verify()
    finally:
        app.close()
    assert report.ok, report.problem
    assert report.sealed > 10


def test_a_rolling_upgrade_on_postgresql(old_source: Path, postgres: str, tmp_path: Path) -> None:
    nodes = deployment(
        tmp_path, old_source, postgres, SPAREKEY_REDIS_URL="redis://127.0.0.1:6379/0"
    )
    try:
        # 1. The old release sets up a new deployment and serves.
        init = nodes.old("init")
        assert init.returncode == 0, init.stderr
        nodes.token = init.stdout.strip().splitlines()[-1]
        (old,) = nodes.start(True)
        assert old.post("/v1/users", json={"id": "before"}).status_code == 201

        # 2. This code migrates the database while the old node serves.
        migrated = nodes.new("migrate")
        assert migrated.returncode == 0, migrated.stderr
        assert old.get("/v1/users/before").status_code == 200

        # 3. Old nodes (the running one and a fresh one) beside a node of this code.
        fresh_old, new = nodes.start(True, False)
        serve_side_by_side(old, fresh_old, new)
        chain_verifies(nodes)

        # 4. A future release's expand migration, applied while the old nodes serve.
        future = Database(
            postgres, migrations=synthetic_migrations(tmp_path, ADD_NOTES, NOTE_NOT_NULL)
        )
        try:
            assert [m.revision for m in future.upgrade().applied] == ["0015"]
            assert old.post("/v1/users", json={"id": "during"}).status_code == 201
            assert fresh_old.get("/v1/users/during").status_code == 200
            (third_old,) = nodes.start(True)
            assert third_old.get("/v1/users/alice").status_code == 200
            assert "newer than Sparekey 0.2.0 knows" in nodes.logs()
            assert "starting without migrating" in nodes.logs()

            # ... and its contract migration: old releases may no longer start.
            assert [m.revision for m in future.upgrade(contract=True).applied] == ["0016"]
        finally:
            future.dispose()
        refused = nodes.old("serve", "--port", str(_free_port()))
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "sparekey: error: the database schema (revision 0016) needs Sparekey 0.9.0 or later "
            "(code with migration 0016); this node runs Sparekey 0.2.0 (migrations up to 0014): "
            "upgrade it to 0.9.0 or later"
        )
    finally:
        nodes.stop()
    output = nodes.logs()
    assert "Traceback" not in output, output
    assert "ERROR" not in output, output


def test_a_rolling_upgrade_on_sqlite(old_source: Path, tmp_path: Path) -> None:
    nodes = deployment(tmp_path, old_source, "")
    try:
        init = nodes.old("init")
        assert init.returncode == 0, init.stderr
        nodes.token = init.stdout.strip().splitlines()[-1]
        (old,) = nodes.start(True)
        migrated = nodes.new("migrate")
        assert migrated.returncode == 0, migrated.stderr
        fresh_old, new = nodes.start(True, False)
        serve_side_by_side(old, fresh_old, new)
        chain_verifies(nodes)
    finally:
        nodes.stop()
    output = nodes.logs()
    assert "Traceback" not in output, output
