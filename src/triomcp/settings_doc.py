"""Render docs/configuration.md from the settings model, so the reference never drifts."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from triomcp.settings import Settings

__all__ = ["render"]

HEADER = """# Configuration

Every setting of a triomcp node. Sources, highest priority first: `TRIOMCP_*` environment
variables (nested keys joined by `__`, lists and tables as JSON), then the TOML file named by
`TRIOMCP_CONFIG`, then the defaults below. Unknown keys and bad values stop startup with a
message naming the key. `triomcp config show` prints the effective configuration (secrets
masked).

```toml
# /etc/triomcp/triomcp.toml
data_dir = "/var/lib/triomcp"
[p2p]
listen = ["/ip4/0.0.0.0/tcp/4001"]
bootstrap = ["/ip4/10.0.0.2/tcp/4001/p2p/12D3KooW..."]
[taskqueue]
concurrency = { "*" = 4, "tool.call" = 8 }
```

Hypercorn's own settings (bind, graceful timeout, header limits) are in `deploy/hypercorn.toml`
for `triomcp serve --config`; without `--config`, the `http.*` settings below are used.

This page is generated from the code (`python -m triomcp.settings_doc > docs/configuration.md`);
a test fails when it is out of date.
"""


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    try:
        return f"`{json.dumps(value, default=str)}`"
    except TypeError:
        return f"`{value}`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.append(f"\n## `[{key}]`\n\n{(annotation.__doc__ or '').strip()}\n")
            rows.append("| key | environment variable | default | meaning |\n|---|---|---|---|")
            rows.extend(_rows(annotation, f"{key}."))
            continue
        env = "TRIOMCP_" + key.replace(".", "__").upper()
        description = (field.description or "").replace("\n", " ").replace("|", "\\|")
        rows.append(f"| `{key}` | `{env}` | {_default(field)} | {description} |")
    return rows


def render() -> str:
    top = ["\n## Top level\n", "| key | environment variable | default | meaning |", "|---|---|---|---|"]
    sections: list[str] = []
    for line in _rows(Settings, ""):
        (sections if sections or line.startswith("\n## `[") else top).append(line)
    return HEADER + "\n".join(top + sections) + "\n"


if __name__ == "__main__":
    print(render(), end="")
