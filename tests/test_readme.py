"""The README's code runs as pasted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def test_readme_python_blocks_run_as_pasted() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    # One process per README, as a user pasting it would have.
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "True"
    assert "gradcheck passed" in done.stdout


def test_readme_gives_the_two_commands() -> None:
    text = README.read_text()
    assert "make demo" in text
    assert "make test" in text
