"""Install lines a person copies cannot replace their torch, and the README's commands are CI's.

A person meets these as text: the README they paste from, the "Install it:" line a missing
library prints. So the checks read that text.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands(text: str) -> list[str]:
    """The README's numbered commands (`# 1. ...` then the command line), in order."""
    lines = text.splitlines()
    return [lines[i + 1] for i, line in enumerate(lines[:-1]) if re.match(r"# \d+\. ", line)]


def test_readme_opens_with_adding_the_plugin_then_the_two_commands_ci_runs_verbatim():
    readme = (ROOT / "README.md").read_text()
    add = readme.index("## Add it to your project")
    first_command = readme.index("# 1. ")
    assert add < first_command, "README opens with how to add the plugin to an existing project"
    section = readme[add:first_command]
    # from the repository, with the html extra, and the user's torch held where it is
    assert re.search(r'pip install -c \S+ "\./pytest-torchexport\[html\]"', section), section
    assert "pip freeze | grep -i '^torch" in section

    one, two = _commands(readme)[:2]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert one in ci and two in ci, "CI runs the README's two commands verbatim"
    venv = re.compile(r"python3 -m venv (\S+)")
    assert venv.search(one)[1] == ".venv"
    # command 2 installs pytest-randomly: its own venv, so command 1's tests are not shuffled
    assert venv.search(two)[1] == ".venv-test" and "[test]" in two
    assert "\n.venv-test/bin/python -m pytest -m docs" in "\n".join(ci) + "\n"


def test_every_model_library_hint_in_the_docs_holds_torch():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    hints = [
        (page.name, line)
        for page in pages
        for line in page.read_text().splitlines()
        if re.search(r"pip install [^|`]*\b(timm|torchvision)\b", line)
    ]
    assert hints, "the scan found no hint: the pattern is stale"
    loose = [(name, line) for name, line in hints if '"torch==' not in line]
    assert not loose, loose


def test_a_missing_model_library_prints_a_line_pinned_to_the_installed_torch():
    from importlib.metadata import version

    from pytest_torchexport.recording.model_specs import install_line

    torch = version("torch")
    release, _, build = torch.partition("+")
    vision = f'"torchvision==0.{int(release.split(".")[1]) + 15}.*"'
    index = f" --extra-index-url https://download.pytorch.org/whl/{build}" if build else ""
    assert install_line("timm") == f'pip install timm {vision} "torch=={torch}"{index}'
    assert install_line("torchvision") == f'pip install {vision} "torch=={torch}"{index}'
    # the pairing itself: torch 2.13 builds pair with torchvision 0.28, from the index of the same build
    assert vision == '"torchvision==0.28.*"' or not torch.startswith("2.13")


def test_a_model_library_built_for_another_torch_is_one_line_naming_both_versions(tester):
    """A torchvision that registers its ops against another torch fails its import with a RuntimeError
    (not an ImportError): one usage_error line with both versions and the pairing line, no traceback."""
    fake = tester.path / "elsewhere" / "torchvision"  # imported first: it fails as a mismatched build does
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    tester.makeconftest(f"import sys\nsys.path.insert(0, {str(fake.parent)!r})\nsys.modules.pop('torchvision', None)\n")
    result = tester.runpytest("--torchexport-model=torchvision:resnet18", "--torchexport-backends=trace")
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines(
        [
            r"torchvision:resnet18: torchvision does not load against this torch \(torch \S+.*\): "
            r"RuntimeError: operator torchvision::nms does not exist",
            r"Install the build that pairs with your torch: pip install \"torchvision==0\.\d+\.\*\" \"torch==\S+\".*",
        ]
    )
    assert "Traceback" not in result.stdout.str() and len(result.stdout.lines) < 60
