"""The command line in-process (click's runner), in a data dir of its own with no TRIOMCP_* settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from triomcp.cli import main


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in [k for k in os.environ if k.startswith("TRIOMCP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("TRIOMCP_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))
