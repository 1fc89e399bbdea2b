"""Every bracketed tag in the package's comments is a word a newcomer can look up.

The code names an invariant with a tag (``# [Held] ...``); docs/glossary.md gives each tag an
entry (``### Held``) with the module that owns it. This test reads every comment and string
of the package with ``tokenize`` (so ``list[Tensor]`` in code is never a tag) and holds the
tags to the entries, both ways: a new tag needs its entry, and an entry outlives no tag.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_torchexport"
GLOSSARY = ROOT / "docs" / "glossary.md"

#: A tag: capitalised words in brackets (``[Held]``, ``[Not The Test's Call]``, ``[Float64 Once]``,
#: ``[Raised, Not Judged]``), not subscripted (``Callable[[Any], None]``, ``x[Index]``) and not a
#: Markdown link (``[Text](url)``).
TAG = re.compile(r"(?<![\w\]\[])\[([A-Z][A-Za-z0-9']*(?:,? [A-Z0-9][A-Za-z0-9']*){0,6})\](?![(\[])")
ENTRY = re.compile(r"^### (.+)\n\n`([^`]+)`\. \S", re.MULTILINE)


def tags_in(source: str) -> set[str]:
    """The tags in the comments and strings (docstrings included) of one module's source."""
    found: set[str] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            # a shape written in brackets (``[N, F]``, ``[B, C, H, W]``) is no tag: every word one letter
            found.update(
                m.group(1) for m in TAG.finditer(token.string) if max(map(len, re.split(r",? ", m.group(1)))) > 1
            )
    return found


def _code_tags() -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for tag in tags_in(path.read_text()):
            where.setdefault(tag, []).append(path.relative_to(PACKAGE).as_posix())
    return where


def _entries() -> dict[str, str]:
    return dict(ENTRY.findall(GLOSSARY.read_text()))


def test_the_tag_pattern_reads_comments_not_code() -> None:
    source = (
        "from typing import Any, Callable\n"
        "x: dict[str, Any] = {}  # [Held] a tag; list[Tensor] is a type, [link](url) is a link\n"
        "f: Callable[[Any], None]\n"
        '"""[Raised, Not Judged] and [Not The Test\'s Call] and [Float64 Once]; a shape [N, F]."""\n'
        "s = x['Key']\n"
    )
    assert tags_in(source) == {"Held", "Raised, Not Judged", "Not The Test's Call", "Float64 Once"}


def test_every_tag_has_an_entry_and_every_entry_a_tag() -> None:
    tags, entries = _code_tags(), _entries()
    assert len(tags) > 20, "the tag pattern no longer finds the package's tags"
    # Tags are for the few invariants several modules rely on: a new one takes the place of an old one.
    assert len(tags) <= 30, f"{len(tags)} tags: write the thought out as a sentence, or retire a tag first"
    missing = {tag: files for tag, files in sorted(tags.items()) if tag not in entries}
    assert not missing, (
        f"tags without an entry in docs/glossary.md (add '### Tag', then '`module.py`. A sentence.'): {missing}"
    )
    stale = sorted(set(entries) - set(tags))
    assert not stale, f"glossary entries no tag of the package uses any more (remove them): {stale}"


def test_each_entry_names_a_module_that_exists_and_uses_its_tag() -> None:
    tags = _code_tags()
    for name, module in _entries().items():
        path = PACKAGE / module
        assert path.is_file(), f"[{name}]'s owner {module} is not a module of the package"
        uses = name in tags_in(path.read_text())
        assert uses, f"[{name}]'s owner {module} does not use the tag; it is used in {tags.get(name)}"
    text = GLOSSARY.read_text()
    headings = re.findall(r"^### (.+)$", text, re.MULTILINE)
    assert headings == sorted(headings, key=str.lower), "entries are kept in alphabetical order"
    assert len(headings) == len(set(headings)) == len(_entries()), "one entry per tag, each with its module"
