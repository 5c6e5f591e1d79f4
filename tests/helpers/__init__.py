"""Helpers shared by the test modules: a test module imports these, never another test module.

- :mod:`tests.helpers.http`: raw MCP over HTTP against a server under test (headers, ``_meta``,
  a legacy session).
- :mod:`tests.helpers.auth`: bearer-token files.
- :mod:`tests.helpers.mesh`: servers with libp2p nodes in one process, connected to each other.
- :mod:`tests.helpers.tasks`: MCP tasks spoken raw, in both eras.
- :mod:`tests.helpers.balanced`: nodes behind a real load balancer: their counters, shared calls.
"""
