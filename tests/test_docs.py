"""Every page's code runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_page_code_runs(page: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    if not blocks:
        pytest.skip("no code on this page")
    # A page's blocks build on each other, as in a reader's session.
    scope: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, str(page), "exec"), scope)
