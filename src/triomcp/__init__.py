"""triomcp: a Trio-native MCP server on Hypercorn with a peer-to-peer task queue."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("triomcp")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
