"""The command line in-process (click's runner): its error lines and exit codes, and ``tokens new``.

What needs a running node is in ``test_processes.py``.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.helpers.cli import run
from triomcp.server.auth import TokenFile


async def test_tokens_new_appends_a_token_the_server_accepts(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOMCP_AUTH__TOKENS_FILE", "tokens")
    first = run("tokens", "new", "alice", "--scopes", "triomcp:status,triomcp:tasks")
    second = run("tokens", "new", "bob")
    assert first.exit_code == 0 and second.exit_code == 0, first.stderr + second.stderr
    path = data_dir / "tokens"
    assert f"to {path};" in first.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tokens = TokenFile(path)
    tokens.load()
    alice = await tokens.verify(first.stdout.strip())
    assert alice is not None and alice.principal == "alice"
    assert alice.scopes == {"triomcp:status", "triomcp:tasks"}
    bob = await tokens.verify(second.stdout.strip())
    assert bob is not None and bob.principal == "bob" and bob.scopes == {"triomcp:status"}
    assert first.stdout.strip() not in path.read_text()  # only the hash is stored


def test_tokens_new_refuses_what_the_file_could_not_hold(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "auth.tokens_file is not set" in run("tokens", "new", "alice").output
    monkeypatch.setenv("TRIOMCP_AUTH__TOKENS_FILE", "tokens")
    assert run("tokens", "new", "two words").exit_code == 1
    assert "unknown scopes ['nope']" in run("tokens", "new", "alice", "--scopes", "nope").output
    assert not (data_dir / "tokens").exists()


def test_usage_and_configuration_errors_are_one_line_and_exit_2(data_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    bad_json = run("call", "12D3KooWsomeone", "server_status", "{not json")
    assert bad_json.exit_code == 2 and bad_json.stderr.startswith("triomcp: ARGUMENTS is not valid JSON")
    assert bad_json.stdout == ""
    monkeypatch.setenv("TRIOMCP_HTTP__MAX_BODY_BYTES", "-5")
    bad_setting = run("config", "show")
    assert bad_setting.exit_code == 2 and "http.max_body_bytes" in bad_setting.stderr
