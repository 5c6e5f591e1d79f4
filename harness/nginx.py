"""nginx as the tests run it: the shipped ``deploy/nginx.conf``, templated with the test's ports.

:func:`nginx_config` takes the ``http``-context file operators copy to ``/etc/nginx/conf.d/``
and changes only where it listens and which servers it balances over: the address of each
``server`` line of the ``upstream`` block (one line per backend, each with the options of the
file's first line) and the ``listen`` port (on 127.0.0.1). Every other directive is the file's,
so the configuration the tests run is the one that ships; a file whose shape no longer matches
is an error, not a silent drift. :func:`nginx_main_config` wraps it in the few main-context
lines an unprivileged, foreground nginx needs (pid file, temp paths, logs to stderr).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from harness.procs import REPO

__all__ = ["DEPLOYED", "NGINX", "nginx_config", "nginx_main_config"]

NGINX = "nginx"
"""The nginx command (1.22 or later, on ``PATH``)."""
DEPLOYED = REPO / "deploy" / "nginx.conf"

_SERVER = re.compile(r"^(?P<indent>\s*)server\s+\d{1,3}(?:\.\d{1,3}){3}:\d+(?P<options>(?:\s+[^;]+)?);\s*$")
_LISTEN = re.compile(r"^(?P<indent>\s*)listen\s+\d+;\s*$")


def nginx_config(frontend_port: int, backends: list[int], *, text: str | None = None) -> str:
    """``deploy/nginx.conf`` (or ``text``) listening on ``127.0.0.1:frontend_port`` and balancing
    over the HTTP servers on 127.0.0.1 at ``backends``."""
    if not backends:
        raise ValueError("a balancer needs at least one backend")
    lines = (DEPLOYED.read_text() if text is None else text).splitlines()
    servers = [i for i, line in enumerate(lines) if _SERVER.match(line)]
    listens = [i for i, line in enumerate(lines) if _LISTEN.match(line)]
    if not servers or servers != list(range(servers[0], servers[0] + len(servers))) or len(listens) != 1:
        raise ValueError(f"{DEPLOYED} no longer has one block of upstream server lines and one listen line")
    first = _SERVER.match(lines[servers[0]])
    listen = _LISTEN.match(lines[listens[0]])
    assert first is not None and listen is not None
    ours = [f"{first['indent']}server 127.0.0.1:{port}{first['options']};" for port in backends]
    lines[listens[0]] = f"{listen['indent']}listen 127.0.0.1:{frontend_port};"
    lines[servers[0]:servers[-1] + 1] = ours
    return "\n".join(lines) + "\n"


def nginx_main_config(http_conf: Path, prefix: Path) -> str:
    """The main configuration of a foreground nginx (one worker) whose files are all under
    ``prefix``, logging errors to stderr and requests to ``prefix/access.log``, with ``http_conf``
    (from :func:`nginx_config`) as its ``http`` context."""
    temp = {name: prefix / f"{name}_temp" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for path in temp.values():
        path.mkdir(parents=True, exist_ok=True)
    user = "user root root;\n" if os.geteuid() == 0 else ""  # root's workers would otherwise be nobody's
    temps = "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items())
    return (f"{user}daemon off;\nworker_processes 1;\npid {prefix / 'nginx.pid'};\nerror_log stderr info;\n"
            f"events {{\n    worker_connections 1024;\n}}\n"
            f"http {{\n    access_log {prefix / 'access.log'};\n{temps}    include {http_conf};\n}}\n")
