"""Every link in README.md and docs/, and every README/docs path the code names, resolves.

A link or a mention resolves when its file exists and its `#anchor`, if any, is a heading of that file
(GitHub's anchor for it). Code points at docs by path (`docs/security.md`, `docs/gateway.md#request-bounds`),
never by a heading's name in quotes (`README "Security"`), which nothing can check and which broke when the
README was split into docs/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parent.parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# What the code and config carry: a path to a page, from the repository root, and perhaps an anchor.
MENTION = re.compile(r"(?<![\w/.-])((?:docs/[\w.-]+\.md)|README\.md|bench/RESULTS\.md)(?:#([\w-]+))?")
# The old way of pointing into the README: a heading's name in quotes.
BY_HEADING_NAME = re.compile(r"README\W{0,2}\"[^\"\n]*\"")
SCANNED_SUFFIXES = {".py", ".yaml", ".yml", ".toml", ".sql", ".proto", ".md", ".txt", ".sh"}
SCANNED_NAMES = {"Makefile", "Dockerfile"}
SKIPPED_DIRS = {"__pycache__", "node_modules", "src"}  # contracts/src: generated stubs


def _tokens(text: str) -> list[Token]:
    return MarkdownIt("commonmark").enable("table").parse(text)


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as '-', repeats -1, -2."""
    tokens, found, seen = _tokens(text), set(), dict[str, int]()
    for opening, inline in zip(tokens, tokens[1:], strict=False):
        if opening.type != "heading_open":
            continue
        words = "".join(child.content for child in inline.children or [] if child.type in ("text", "code_inline"))
        slug = re.sub(r"[^\w\- ]", "", words.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def links(text: str) -> Iterator[str]:
    """Every link target of a page (inline links and images; code blocks and spans hold none)."""
    for token in _tokens(text):
        for child in token.children or []:
            target = child.attrs.get("href") or child.attrs.get("src")
            if isinstance(target, str):
                yield target


def broken(target: str, page: Path) -> str | None:
    """Why a link from `page` (or a mention, relative to the root) does not resolve; None when it does."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):
        return None  # http(s), mailto: outside the repository, not checked here
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
        return f"{target}: no such file"
    if anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
        return (
            f"{target}: {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file.name} has no heading #{anchor}"
        )
    return None


def scanned_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in parts[:-1]):
            continue
        if path == Path(__file__).resolve():
            continue  # this file's examples are wrong on purpose
        if path.is_file() and (path.suffix in SCANNED_SUFFIXES or path.name in SCANNED_NAMES):
            yield path


def mention_problems(text: str, where: str) -> list[str]:
    problems = [f"{where}: {m.group(0)} names a heading; name the docs path" for m in BY_HEADING_NAME.finditer(text)]
    for match in MENTION.finditer(text):
        target = match.group(1) + (f"#{match.group(2)}" if match.group(2) else "")
        if why := broken(target, ROOT / "README.md"):
            problems.append(f"{where}: {why}")
    return problems


def test_every_link_of_the_readme_and_the_docs_resolves() -> None:
    assert len(PAGES) > 5, PAGES
    problems = [
        f"{page.relative_to(ROOT)}: {why}"
        for page in PAGES
        for t in links(page.read_text())
        if (why := broken(t, page))
    ]
    assert problems == []


def test_every_readme_or_docs_path_in_the_code_resolves() -> None:
    problems: list[str] = []
    for path in scanned_files():
        problems += mention_problems(path.read_text(errors="replace"), str(path.relative_to(ROOT)))
    assert problems == []


def test_the_readme_links_every_page_of_the_docs() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links((ROOT / "README.md").read_text())}
    assert [page.name for page in PAGES[1:] if page.resolve() not in linked] == []


def test_the_checks_catch_a_missing_file_a_missing_anchor_and_a_heading_by_name(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## Hostile input (both services)\n\n## Notes\n\n## Notes\n\n```\n## not a heading\n```\n"
    )
    assert anchors(page.read_text()) == {"title", "hostile-input-both-services", "notes", "notes-1"}
    assert broken("#hostile-input-both-services", page) is None and broken("#notes-1", page) is None
    assert broken("#not-a-heading", page) == "#not-a-heading: page.md has no heading #not-a-heading"
    assert broken("missing.md", page) == "missing.md: no such file"
    assert list(links("[a](x.md#y) `[b](z.md)` ![c](d.png)")) == ["x.md#y", "d.png"]
    assert mention_problems('see README "Security" and docs/security.md', "f.py") == [
        'f.py: README "Security" names a heading; name the docs path'
    ]
    assert mention_problems("docs/nowhere.md and docs/security.md#no-such-heading", "f.py") == [
        "f.py: docs/nowhere.md: no such file",
        "f.py: docs/security.md#no-such-heading: docs/security.md has no heading #no-such-heading",
    ]
