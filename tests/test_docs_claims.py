"""What docs/architecture.md says about the rules the tests enforce stays what they enforce."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module_state_exceptions() -> dict:
    spec = importlib.util.spec_from_file_location("module_state", ROOT / "tests" / "test_module_state.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EXCEPTIONS


def test_the_state_paragraph_names_every_module_state_exemption():
    page = (ROOT / "docs" / "architecture.md").read_text()
    start = page.index("**State.**")
    paragraph = page[start : page.index("\n\n", start)]
    exceptions = _module_state_exceptions()
    for path, name in exceptions:
        assert f"`{path}`'s `{name}`" in paragraph, f"architecture.md's State paragraph does not name {path}'s {name}"
    words = {1: "one exception", 2: "two exceptions", 3: "three exceptions", 4: "four exceptions"}
    assert words.get(len(exceptions), f"{len(exceptions)} exceptions") in paragraph.lower()
