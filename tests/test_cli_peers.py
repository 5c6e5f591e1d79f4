"""``triomcp peers authorize [--delegate|--no-delegate]`` and ``peers list``, in-process (click's runner)."""

from __future__ import annotations

from pathlib import Path

from libp2p.crypto.ed25519 import create_new_key_pair

from tests.helpers.cli import run
from triomcp.p2p.identity import peer_id_of


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
