"""The official MCP conformance suite against a real triomcp node: ``python -m conformance`` (``make conformance``)."""
