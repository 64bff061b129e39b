"""``sparekey backup``, run as an operator runs it: real processes, a lost data directory."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

from tests.cli.test_cli import run


def test_create_verify_and_restore_into_a_fresh_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = run("init", data_dir=data).stdout.strip().splitlines()[-1]
    before = run("audit", "verify", data_dir=data)  # seals the records so far
    assert before.returncode == 0, before.stderr
    backup = tmp_path / "backups" / "sparekey-1.skb"
    backup.parent.mkdir()

    created = run("backup", "create", str(backup), data_dir=data)
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert token.split("_", 2)[2].encode() not in backup.read_bytes()
    verified = run("backup", "verify", str(backup), data_dir=data)
    assert verified.returncode == 0, verified.stderr
    assert "Backup verified" in verified.stdout
    assert "api_keys" in verified.stdout

    (tmp_path / "vault").mkdir()
    shutil.copy2(data / "sparekey.key", tmp_path / "vault" / "sparekey.key")
    shutil.rmtree(data)
    fresh = tmp_path / "new-machine"
    fresh.mkdir()
    shutil.copy2(tmp_path / "vault" / "sparekey.key", fresh / "sparekey.key")
    restored = run("backup", "restore", str(backup), data_dir=fresh)
    assert restored.returncode == 0, restored.stderr
    assert "Restored" in restored.stderr

    after = run("audit", "verify", "--no-seal", data_dir=fresh)
    assert after.returncode == 0, after.stderr
    assert ", 0 unsealed," in before.stdout
    # The same sealed records and signed checkpoints; backup.restored waits to be sealed.
    assert after.stdout == before.stdout.replace(", 0 unsealed,", ", 1 unsealed,")
    assert token.split("_")[1] in run("apikey", "list", data_dir=fresh).stdout


def test_refusals_are_one_line_and_exit_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("init", data_dir=data)
    backup = tmp_path / "b.skb"
    assert run("backup", "create", str(backup), data_dir=data).returncode == 0
    truncated = tmp_path / "truncated.skb"
    truncated.write_bytes(backup.read_bytes()[:-100])
    empty = tmp_path / "empty"
    empty.mkdir()

    cases = [
        (("backup", "restore", str(backup)), data, "already holds Sparekey data"),
        (("backup", "verify", str(truncated)), data, "backup is truncated"),
        (("backup", "restore", str(backup)), empty, "copy the key file it was made with"),
        (("backup", "create", str(backup)), data, "already exists"),
    ]
    for args, where, message in cases:
        result = run(*args, data_dir=where)
        assert result.returncode == 1, (args, result.stderr)
        assert message in result.stderr
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in empty.iterdir()) == [], "a refused restore creates nothing"
