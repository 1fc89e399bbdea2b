"""A row's remedies in the words of where it is read.

The engine writes remedies for a marked test: ``backends=[...]``, ``xfail={...}``, ``dims=``. A
model named on the command line has no marker to edit, so its rows name the flags that do the
same: ``check``'s own (``--backends``) under ``python -m pytest_torchexport check``, the
``--torchexport-*`` ones under ``pytest --torchexport-model``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..results.outcome import Outcome, settle
from .command import FLAGS

if TYPE_CHECKING:
    from ..results.report import Result

#: Each marker remedy, and the words for a model named on the command line.
_MARKER_WORDS = (
    (re.compile(r"drop it with backends=\[\.\.\.\]"), "drop it with {backends}"),
    (re.compile(r"mark it known with xfail=\{[^}]*\}"), "record it as known in a baseline ({baseline})"),
    (re.compile(r"\bdims=/inputs="), "{inputs}"),
    (re.compile(r"\bdynamic= or dims="), "the sizes with {inputs}"),
    (re.compile(r"\bwith dims=,"), "with {inputs},"),
)
#: A model's own remedy, written for pytest, as the check command's line.
_CHECK_WORDS = (
    (
        re.compile(
            r"python -m pytest --torchexport-model=(\S+) --torchexport-model-inputs='([^']*)' \(the check command's --inputs; "
        ),
        r"python -m pytest_torchexport check \1 --inputs '\2' (",
    ),
)
#: The flags of ``python -m pytest_torchexport check``, and of pytest with ``--torchexport-model``.
_FLAGS = {
    True: {
        "backends": "--backends",
        "baseline": "--baseline FILE, written once with: -- --torchexport-update-baseline",
        "inputs": "--inputs 'x: float32[batch=1..8, ...]'",
    },
    False: {
        "backends": "--torchexport-backends",
        "baseline": "--torchexport-baseline=FILE, written once with --torchexport-update-baseline",
        "inputs": "--torchexport-model-inputs 'x: float32[batch=1..8, ...]'",
    },
}


def in_flag_words(text: str, command: bool) -> str:
    """``text`` with each marker remedy in the words of the command line (``command``: ``check``'s)."""
    flags = _FLAGS[command]
    for pattern, words in _MARKER_WORDS:
        text = pattern.sub(words.format(**flags), text)
    for pattern, replacement in _CHECK_WORDS if command else ():
        text = pattern.sub(replacement, text)
    return text


#: Each pytest flag ``check`` passes, and the option of ``check``'s a user typed.
_OWN_FLAGS = {flag: "--" + own.replace("_", "-") for own, flag in FLAGS.items()}
_FLAG = re.compile(r"(--torchexport-[a-z-]+)(=?)")


def usage_in_check_words(text: str) -> str:
    """A usage error of a run ``check`` started, naming the options the user typed, not the pytest
    flags ``check`` passed them as (``--backends tracee``, not ``--torchexport-backends=tracee``)."""

    def own(found: re.Match[str]) -> str:
        flag = _OWN_FLAGS.get(found.group(1))
        return found.group(0) if flag is None else flag + (" " if found.group(2) else "")

    return _FLAG.sub(own, text)


def for_item(results: list[Result], command: bool) -> None:
    """Rewrite the remedies of a model item's rows (``verdicts.record`` calls it for those only)."""
    for r in results:
        message = in_flag_words(r.message, command)
        cause = in_flag_words(r.likely_cause, command) if r.likely_cause else r.likely_cause
        if (message, cause) != (r.message, r.likely_cause):
            settle(r, Outcome(r.status, message, cause, r.cause_kind))


__all__ = ["for_item", "in_flag_words", "usage_in_check_words"]
