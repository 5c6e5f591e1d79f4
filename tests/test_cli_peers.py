"""``triomcp peers authorize [--delegate|--no-delegate]`` and ``peers list``, in-process (click's runner)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from libp2p.crypto.ed25519 import create_new_key_pair

from triomcp.cli import main
from triomcp.p2p.identity import peer_id_of


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("TRIOMCP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TRIOMCP_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def test_authorize_a_delegate_and_list_it_as_in_the_file(data_dir: Path) -> None:
    worker, front = (peer_id_of(create_new_key_pair()) for _ in range(2))
    assert run("peers", "authorize", worker, "--label", "worker-2").output == f"authorized: {worker}\n"
    assert run("peers", "authorize", front, "--label", "front-1", "--delegate").output == (
        f"authorized: {front} (delegate)\n")
    assert run("peers", "authorize", front).output == f"already authorized: {front} (delegate)\n"
    assert set(run("peers", "list").output.splitlines()) == {f"{worker} worker-2", f"delegate {front} front-1"}
    assert run("peers", "authorize", worker, "--delegate").output == f"updated: {worker} (delegate)\n"
    assert run("peers", "authorize", front, "--no-delegate").output == f"updated: {front}\n"
    lines = (data_dir / "authorized_peers").read_text().splitlines()
    assert f"delegate {worker} worker-2" in lines and f"{front} front-1" in lines
    bad = run("peers", "authorize", "delegate")
    assert bad.exit_code == 2 and "'delegate' is not a peer id" in bad.stderr
