"""The documentation stays true to the code."""

from __future__ import annotations

from pathlib import Path

from triomcp.settings_doc import render

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text() == render(), (
        "docs/configuration.md is out of date: python -m triomcp.settings_doc > docs/configuration.md")


def test_readme_starts_with_the_two_commands() -> None:
    readme = (DOCS.parent / "README.md").read_text().splitlines()
    block = readme[readme.index("```sh") + 1: readme.index("```sh") + 3]
    assert block[0].startswith("make serve") and block[1].startswith("make test")


def test_docs_link_to_files_that_exist() -> None:
    import re

    for page in [DOCS.parent / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)\)", page.read_text()):
            base = DOCS.parent if target.startswith("docs/") else page.parent
            assert (base / target).exists(), f"{page.name} links to missing {target}"
