"""What the test suite, the benchmarks, the reliability runs and the conformance runner share.

- :mod:`harness.procs`: processes on 127.0.0.1 (``triomcp serve``/``node`` or any Python module):
  free ports, their environment, start and stop, bounded waits until they answer.
- :mod:`harness.mcp_http`: MCP requests as the HTTP wire carries them, in both eras, and small
  blocking and Trio clients for them.
- :mod:`harness.wrk`: the ``wrk`` load generator: run it, read its report.
- :mod:`harness.measure`: what a process costs: CPU time, resident memory, waiting until it idles.

Layering: ``harness`` imports ``triomcp`` and third-party libraries only. ``tests/``, ``bench/``,
``reliability/`` and ``conformance/`` import ``harness``; none of them imports another's modules,
and nothing imports a ``__main__``. Every wait here is bounded; every address is loopback.
"""
