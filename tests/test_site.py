"""The built documentation site, read as a browser would: code, links, API entries, search.

`make test` builds the site into ``site/`` first; without it (or without mkdocs, as in the
latest-torch environment) these tests skip.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import tempfile
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

import npgrad

ROOT = Path(__file__).parents[1]
SITE = ROOT / "site"


@cache
def site() -> Path:
    """Return the built site: ``site/`` when `make docs` built it, else a fresh build."""
    if (SITE / "index.html").exists() and (SITE / "search" / "search_index.json").exists():
        return SITE
    pytest.importorskip("mkdocs")
    out = Path(tempfile.mkdtemp(prefix="npgrad-site-"))
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--quiet", "-d", str(out)],
        cwd=ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    return out


def pages() -> list[Path]:
    return sorted(p for p in site().rglob("*.html") if p.name != "404.html")


class _Page(HTMLParser):
    """Collect a page's ids, its links and images, and its text outside code."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []
        self.prose: list[str] = []
        self.blockquotes: list[str] = []
        self._code = 0
        self._quote = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if tag == "a" and values.get("href"):
            self.links.append(values["href"] or "")
        if tag == "img" and values.get("src"):
            self.images.append(values["src"] or "")
        if tag in ("pre", "code"):
            self._code += 1
        if tag == "blockquote":
            self._quote += 1
            self.blockquotes.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "code"):
            self._code -= 1
        if tag == "blockquote":
            self._quote -= 1

    def handle_data(self, data: str) -> None:
        if self._code:
            return
        self.prose.append(data)
        if self._quote:
            self.blockquotes[-1] += data


@cache
def parsed(page: Path) -> _Page:
    parser = _Page()
    parser.feed(page.read_text())
    return parser


def _name(page: Path) -> str:
    return str(page.relative_to(site()))


@pytest.mark.parametrize("page", pages(), ids=_name)
def test_examples_and_fences_render_as_code(page: Path) -> None:
    found = parsed(page)
    prose = "".join(found.prose)
    assert ">>>" not in prose, f"{_name(page)}: a >>> example outside a code block"
    assert "```" not in prose, f"{_name(page)}: a fenced block left as text"
    assert not any(">>>" in quote for quote in found.blockquotes)


@pytest.mark.parametrize("page", pages(), ids=_name)
def test_internal_links_and_images_resolve(page: Path) -> None:
    found = parsed(page)
    for target in [*found.links, *found.images]:
        parts = urlsplit(target)
        if parts.scheme or parts.netloc or target.startswith(("mailto:", "javascript:")):
            continue
        if parts.path:
            path = (page.parent / unquote(parts.path)).resolve()
            if path.is_dir():
                path = path / "index.html"
            assert path.exists(), f"{_name(page)}: {target} leads nowhere"
        else:
            path = page
        if parts.fragment and path.suffix == ".html":
            assert unquote(parts.fragment) in parsed(path).ids, (
                f"{_name(page)}: {target} names no anchor of {_name(path)}"
            )


def _api_ids() -> set[str]:
    return parsed(site() / "api" / "index.html").ids


def test_every_public_name_has_an_api_entry() -> None:
    ids = _api_ids()
    for name in npgrad.__all__:
        if name == "__version__":
            continue
        assert f"npgrad.{name}" in ids or f"npgrad.errors.{name}" in ids, name


def test_every_error_has_an_api_entry() -> None:
    ids = _api_ids()
    for name in dir(npgrad.errors):
        value = getattr(npgrad.errors, name)
        if isinstance(value, type) and issubclass(value, Warning | npgrad.NpgradError):
            assert f"npgrad.errors.{name}" in ids, name


def test_every_plugin_op_has_an_api_entry() -> None:
    npgrad.load_plugins()
    ids = _api_ids()
    for name in npgrad.ops():
        namespace, opname = name.split("::")
        if namespace != "scipy":
            continue
        assert any(i.startswith("npgrad_scipy.") and i.endswith(f".{opname}") for i in ids), name


def test_search_finds_gradcheck_on_every_page_that_mentions_it() -> None:
    index = json.loads((site() / "search" / "search_index.json").read_text())
    separator = re.compile(index["config"]["separator"])
    mentioning = set()
    found = set()
    for doc in index["docs"]:
        text = html.unescape(re.sub(r"<[^>]+>", " ", doc["title"] + " " + doc["text"]))
        page = doc["location"].split("#")[0]
        if re.search(r"(?<![a-z])gradcheck", text.lower()):
            mentioning.add(page)
            # What lunr indexes: the text split by the site's separator, lower-cased.
            if "gradcheck" in {token.lower() for token in separator.split(text)}:
                found.add(page)
    assert len(mentioning) >= 8
    assert found == mentioning
