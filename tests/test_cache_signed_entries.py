"""[Signed Entries] No one who can write the cache folder turns a check green.

The forgery, run as a user's CI runs it: a pass is stored, the model's
``forward`` is edited into a defect (a data-dependent branch, same parameters), and the stored
entry's digest of the model file is set to the edited file's. With ``TORCHEXPORT_CACHE_SECRET``
the forged entry is refused and the check fails; without it the entry is reused, as
docs/howto-cache.md says ("Who may write the cache"). Then entries signed with another
secret, entries from before an upgrade, and the hostile set (truncated, oversized, not an
entry, another format, malformed fields, a planted link): each a miss with a note, never an
error and never a reused pass.
"""

import hashlib
import hmac
import json
import os
import textwrap
from pathlib import Path

import pytest
from helpers import by_item, report_rows

from pytest_torchexport.cache.store import MAX_ENTRY_BYTES, SECRET_ENV, Cache

MODEL = """
    import torch


    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x) * 2.0
"""
# The defect: a branch on the input's values, which trace freezes; the parameters are the same.
DEFECT = """
    import torch


    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)

        def forward(self, x):
            if x.sum() > 0:
                return self.lin(x) * 2.0
            return self.lin(x) - 1.0
"""
SUITE = """
    import pytest
    import torch

    from m_model import Model


    @pytest.mark.torchexport(backends=["trace"])
    def test_model():
        Model().eval()(torch.ones(3, 4))
"""


@pytest.fixture
def suite(tester, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)  # each test sets the secret it means
    (tester.path / "m_model.py").write_text(textwrap.dedent(MODEL).lstrip())
    tester.makepyfile(test_suite=textwrap.dedent(SUITE))
    return tester


def _entries(tester) -> list[Path]:
    return list((tester.path / ".pytest_cache").rglob("torchexport-verdicts/v1/*/*.json"))


def _row(tester, result, name: str = "out.json") -> dict:
    (row,) = report_rows(tester, name, key=by_item).values()
    return row


def _forge(entry: Path, model: Path, passed: str) -> None:
    """What someone who can write the folder does: the stored pass (``passed``, the entry as it was)
    put back, with the model file's digest set to the edited file's. (A reproducible search also
    stored the edited model's failure under the same key: the forgery replaces it.)"""
    data = json.loads(passed)
    pairs = [pair for pair in data["files"] if pair[0] == str(model)]
    assert pairs, data["files"]  # the model's file ran while the pass was made: the entry lists it
    pairs[0][1] = hashlib.sha256(model.read_bytes()).hexdigest()
    entry.write_text(json.dumps(data))


def test_a_forged_pass_is_refused_with_the_secret_and_reused_without_it(suite, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "trusted-main-branch-secret")
    suite.runpytest().assert_outcomes(passed=1)
    (entry,) = _entries(suite)
    assert isinstance(json.loads(entry.read_text())["signature"], str)
    passed = entry.read_text()

    model = suite.path / "m_model.py"
    model.write_text(textwrap.dedent(DEFECT).lstrip() + "\n")  # another size: the bytecode cache sees the edit
    edited = suite.runpytest("--torchexport-report=out.json")
    edited.assert_outcomes(failed=1)
    assert _row(suite, edited)["status"] == "mismatch"

    _forge(entry, model, passed)
    # With the secret: the forged entry does not verify, the check runs, and fails.
    forged = suite.runpytest("--torchexport-report=out.json")
    forged.assert_outcomes(failed=1)
    row = _row(suite, forged)
    assert row["status"] == "mismatch" and "cached" not in row, row
    assert row["cache_refused"] == "signature"
    forged.stdout.re_match_lines(
        [
            r"torchexport cache: refused 1 stored entry: 1 whose signature does not verify with this "
            r"TORCHEXPORT_CACHE_SECRET .*; checked again",
        ]
    )
    assert "torchexport cache warning" not in forged.stdout.str()  # said once, by the line that counts them
    assert "INTERNALERROR" not in forged.stdout.str()

    # Without it, nothing is verified: the folder's writers are trusted, and the forged pass is
    # reused for the broken model. This is the documented limit (docs/howto-cache.md).
    monkeypatch.delenv(SECRET_ENV)
    _forge(entry, model, passed)  # again: the refused run stored its failure where a search is reproducible
    unsigned = suite.runpytest("--torchexport-report=out.json")
    unsigned.assert_outcomes(passed=1)
    assert _row(suite, unsigned)["cached"] is True


def test_an_entry_signed_with_another_secret_is_a_miss_then_signed_again(suite, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "secret-a")
    suite.runpytest().assert_outcomes(passed=1)
    monkeypatch.setenv(SECRET_ENV, "secret-b")
    other = suite.runpytest("--torchexport-report=out.json")
    other.assert_outcomes(passed=1)
    row = _row(suite, other)
    assert "cached" not in row and row["cache_refused"] == "signature"
    other.stdout.re_match_lines([r"torchexport cache: refused 1 stored entry: 1 whose signature does not verify.*"])
    # The fresh pass was stored signed with secret-b: the next run with it reuses it.
    again = suite.runpytest("--torchexport-report=out.json")
    again.assert_outcomes(passed=1)
    row = _row(suite, again)
    assert row["cached"] is True and "cache_refused" not in row
    assert "refused" not in again.stdout.str()


def _sign(entry: dict, secret: str) -> str:
    from pytest_torchexport.cache.store import _signed

    return hmac.new(secret.encode(), _signed(entry), hashlib.sha256).hexdigest()


def test_entries_from_before_an_upgrade_are_misses_not_errors(suite, monkeypatch):
    suite.runpytest().assert_outcomes(passed=1)  # no secret: an unsigned entry
    (entry,) = _entries(suite)
    data = json.loads(entry.read_text())
    assert "signature" not in data
    data.pop("plugin")  # as the plugin before signing wrote it: no "plugin", no "signature"
    entry.write_text(json.dumps(data))

    # The secret set after an upgrade: the unsigned entry is a miss, counted, never an error.
    monkeypatch.setenv(SECRET_ENV, "s")
    upgraded = suite.runpytest("--torchexport-report=out.json")
    upgraded.assert_outcomes(passed=1)
    row = _row(suite, upgraded)
    assert "cached" not in row and row["cache_refused"] == "unsigned"
    upgraded.stdout.re_match_lines(
        [
            r"torchexport cache: refused 1 stored entry: 1 unsigned \(written without TORCHEXPORT_CACHE_SECRET, "
            r"or by a plugin before signing\); checked again"
        ]
    )

    # An entry of another format, signed by an older plugin with the same secret: a miss with a note.
    data = json.loads(entry.read_text())
    data.update(version=0, plugin="pytest-torchexport 0.0.9")
    data["signature"] = _sign(data, "s")
    entry.write_text(json.dumps(data))
    older = suite.runpytest("--torchexport-report=out.json")
    older.assert_outcomes(passed=1)
    row = _row(suite, older)
    assert "cached" not in row and "cache_refused" not in row
    older.stdout.re_match_lines(
        [
            r"torchexport cache warning: .*: ignored .*: an entry of format 0 \(written by "
            r"pytest-torchexport 0.0.9\), this plugin reads format 1: checked again"
        ]
    )
    assert "INTERNALERROR" not in older.stdout.str()
    assert _row(suite, suite.runpytest("--torchexport-report=out.json"))["cached"] is True  # written again


def test_hostile_entries_in_a_real_run_are_misses(suite):
    """Without a secret, entries no writer of this plugin makes: a miss with a note, never an error."""
    suite.runpytest().assert_outcomes(passed=1)
    (entry,) = _entries(suite)
    good = json.loads(entry.read_text())
    for hostile, words in (
        (" " * (MAX_ENTRY_BYTES + 1), "more than an entry ever holds"),
        (json.dumps({**good, "row": {**good["row"], "findings": "frozen"}}), "its row's findings is a str"),
    ):
        entry.write_text(hostile)
        result = suite.runpytest("--torchexport-report=out.json")
        result.assert_outcomes(passed=1)
        assert "cached" not in _row(suite, result)
        result.stdout.re_match_lines([rf"torchexport cache warning: .*{words}.*: checked again"])
        assert "INTERNALERROR" not in result.stdout.str()


# The hostile set against the store alone (no check runs): each entry is a miss with a note.
KEY = "ab" + "0" * 62


def _stored(tmp_path: Path, secret: str | None = "s") -> tuple[Cache, Path]:
    cache = Cache(tmp_path, secret=secret)
    assert (
        cache.store(
            KEY, {"status": "pass", "backend": "trace", "examples": 3, "max_abs_err": float("nan"), "shape": (2, 3)}, []
        )
        is None
    )
    return cache, cache._path(KEY)


def test_a_signed_entry_round_trips_through_json(tmp_path):
    cache, path = _stored(tmp_path)  # a NaN and a tuple: signed as they read back
    hit, note = cache.lookup(KEY)
    assert note is None and hit.row["examples"] == 3 and hit.row["shape"] == [2, 3]
    assert Cache(tmp_path).lookup(KEY)[0] is not None  # no secret: not verified


@pytest.mark.parametrize(
    "edit, refused, words",
    [
        (lambda e: e["row"].update(examples=30), "signature", "its signature does not verify"),
        (lambda e: e["files"].append(["/x.py", "0" * 64]), "signature", "its signature does not verify"),
        (lambda e: e.update(created="2099-01-01T00:00:00+00:00"), "signature", "its signature does not verify"),
        (lambda e: e.update(signature=e["signature"].upper()), "signature", "its signature does not verify"),
        (lambda e: e.update(signature=None), "unsigned", "refused the unsigned entry"),
        (lambda e: e.pop("signature"), "unsigned", "refused the unsigned entry"),
    ],
    ids=["row", "files", "date", "signature-case", "signature-null", "no-signature"],
)
def test_any_edit_of_a_signed_entry_is_refused(tmp_path, edit, refused, words):
    cache, path = _stored(tmp_path)
    entry = json.loads(path.read_text())
    edit(entry)
    path.write_text(json.dumps(entry))
    hit, note = cache.lookup(KEY)
    assert hit is None and note.refused == refused and words in note.text


def test_a_signed_entry_moved_to_another_key_is_refused(tmp_path):
    cache, path = _stored(tmp_path)
    other = "cd" + "0" * 62
    target = cache._path(other)
    target.parent.mkdir(parents=True)
    target.write_text(path.read_text())  # a genuine signature, for another key
    hit, note = cache.lookup(other)
    assert hit is None and "its key is not the one its name says" in note.text


@pytest.mark.parametrize(
    "content, words",
    [
        ('{"version": 1, "key": ', "ignored the corrupt entry"),  # truncated
        (" " * (MAX_ENTRY_BYTES + 1), "more than an entry ever holds"),  # oversized
        ("[" * 100_000 + "]" * 100_000, "RecursionError"),  # nested past the parser's stack
        ("[1, 2]", "a JSON list, not an entry"),
        ('{"version": 7, "plugin": "x\\u001b[2J\\nevil"}', "an entry of format 7"),  # another format
        ('"\\ud800"', "not an entry"),
        (b"\xff\xfe", "ignored the corrupt entry"),  # not UTF-8
    ],
    ids=["truncated", "oversized", "nested", "list", "version", "string", "bytes"],
)
@pytest.mark.parametrize("secret", [None, "s"], ids=["no-secret", "secret"])
def test_hostile_entries_are_misses_with_a_note(tmp_path, content, words, secret):
    cache, path = _stored(tmp_path, secret)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    hit, note = cache.lookup(KEY)
    assert hit is None and words in note.text and note.text.endswith("checked again"), note
    assert "\x1b" not in note.text and "\n" not in note.text  # text from the entry is shown as one plain line


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda e: e.update(files=[["/x.py"]]), "list of file digests is malformed"),
        (lambda e: e.update(files=[[1, "0" * 64]]), "list of file digests is malformed"),  # os.stat(1) is stdout
        (lambda e: e.update(files="abc"), "list of file digests is malformed"),
        (lambda e: e["row"].update(status="timeout"), "its row's status is not one that is kept"),
        (lambda e: e["row"].update(failing_example=[1]), "its row's failing_example is a list"),
        (lambda e: e["row"].update(examples="many"), "its row's examples is a str"),
        (lambda e: e["row"].update(max_abs_err=[1]), "its row's max_abs_err is a list"),
        (lambda e: e.pop("row"), "KeyError"),
    ],
    ids=["pair", "fd", "files-str", "status", "failing-example", "examples", "error", "no-row"],
)
def test_unsigned_malformed_entries_are_misses(tmp_path, edit, words):
    cache, path = _stored(tmp_path, secret=None)
    entry = json.loads(path.read_text())
    edit(entry)
    path.write_text(json.dumps(entry))
    hit, note = cache.lookup(KEY)
    assert hit is None and words in note.text, note


def test_a_fifo_or_a_device_in_place_of_an_entry_is_not_read(tmp_path):
    cache, path = _stored(tmp_path, secret=None)
    path.unlink()
    os.mkfifo(path)  # reading it would block the session
    hit, note = cache.lookup(KEY)
    assert hit is None and "not a regular file" in note.text


def test_pruning_never_follows_a_planted_link(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    precious = elsewhere / ("ef" + "0" * 62 + ".json")
    precious.write_text("{}")
    old = 1_000_000.0
    os.utime(precious, (old, old))  # "unused" for decades
    cache = Cache(tmp_path / "cache")
    cache.store(KEY, {"status": "pass"}, [])
    (cache.root / "ef").symlink_to(elsewhere)
    (cache.root / "ab" / "notes.txt").write_text("not an entry")
    os.utime(cache.root / "ab" / "notes.txt", (old, old))
    assert cache.prune(max_age_days=30, max_entries=5000) == 0
    assert precious.exists() and (cache.root / "ab" / "notes.txt").exists()


def test_xdist_workers_sign_and_verify_with_the_secret_they_inherit(suite, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv(SECRET_ENV, "s")
    suite.runpytest_subprocess("-n", "2").assert_outcomes(passed=1)
    (entry,) = _entries(suite)
    assert "signature" in json.loads(entry.read_text())
    again = suite.runpytest_subprocess("-n", "2", "--torchexport-report=out.json")
    again.assert_outcomes(passed=1)
    assert _row(suite, again)["cached"] is True
    monkeypatch.setenv(SECRET_ENV, "t")
    other = suite.runpytest_subprocess("-n", "2", "--torchexport-report=out.json")
    other.assert_outcomes(passed=1)
    assert "cached" not in _row(suite, other)
    other.stdout.re_match_lines([r"torchexport cache: refused 1 stored entry: 1 whose signature does not verify.*"])


@pytest.mark.parametrize("secret", [None, "s"])
def test_an_entry_is_written_only_as_large_as_a_lookup_reads(tmp_path, secret):
    cache = Cache(tmp_path, secret=secret)
    row = {"status": "mismatch", "backend": "trace", "examples": 3, "message": "x" * MAX_ENTRY_BYTES}
    note = cache.store(KEY, row, [])
    assert note is not None and "more than a lookup reads" in note.text
    assert not cache._path(KEY).exists()
    row["message"] = "x" * (MAX_ENTRY_BYTES - 2000)  # just within: signed or not, it reads back whole
    assert cache.store(KEY, row, []) is None
    hit, note = cache.lookup(KEY)
    assert note is None and hit is not None and hit.row["message"] == row["message"]


def test_notes_that_differ_only_in_their_entry_are_one_line_naming_the_folder():
    """Every entry of a folder ignored (written by another format, a folder tampered with): one line
    with the count, not one hashed path per check; a line the hashed path would make wider than a
    terminal's usual 200 characters names the folder alone."""
    from pytest_torchexport.glue.summary import WIDEST_LINE, cache_lines

    root = "/home/ci/.pytest_cache/torchexport-verdicts/v1"
    said = ": an entry of format 0 (written by pytest-torchexport 0.0.1), this plugin reads format 1: checked again"
    rows = [
        {"cache": f"ignored {root}/{k[:2]}/{k}.json{said}", "nodeid": f"test_m.py::test_{i}[trace]"}
        for i, k in enumerate(hashlib.sha256(str(i).encode()).hexdigest() for i in range(3))
    ]
    assert cache_lines(rows) == [f"torchexport cache warning: 3 checks: ignored {root}/…{said}"]
    (line,) = cache_lines(rows[:1])  # one check: its own name, the path cut where the line would be too wide
    assert line == f"torchexport cache warning: test_m.py::test_0[trace]: ignored {root}/…{said}"
    assert len(f"torchexport cache warning: test_m.py::test_0[trace]: {rows[0]['cache']}") > WIDEST_LINE
    short = [
        {"cache": "ignored /c/v1/ab/" + "ab" * 32 + ".json: not a regular file: checked again", "nodeid": "t.py::t"}
    ]
    assert cache_lines(short) == [f"torchexport cache warning: t.py::t: {short[0]['cache']}"]  # it fits: whole
