"""``triomcp.app:app`` for ``hypercorn --config deploy/hypercorn.toml triomcp.app:app``.

Settings come from ``TRIOMCP_CONFIG`` and ``TRIOMCP_*`` variables.
"""

from triomcp.server.app import create_app

app = create_app()
