"""[Verdict Key] The cache reads a check through ``CheckFacts`` only, and keys every fact it lists.

The engine hands the cache a ``CheckFacts`` (``cache/facts.py``); ``fingerprint.check_key``
reads nothing else. A fact the key skipped would let a pass be reused for another check, so
each keyed field is changed here on its own and must change the key; a new field fails the
coverage assertion until it gets a case here (or joins ``NOT_KEYED`` with a reason).
"""

import dataclasses

import pytest
import torch

from pytest_torchexport.cache.facts import NOT_KEYED, CallDigests, CheckFacts
from pytest_torchexport.cache.fingerprint import check_key, module_digest
from pytest_torchexport.cache.store import Cache
from pytest_torchexport.options import Options


def _module(value: float) -> torch.nn.Module:
    module = torch.nn.Linear(3, 2)
    with torch.no_grad():
        module.weight.fill_(value)
        module.bias.zero_()
    return module


def _facts(**changed) -> CheckFacts:
    base = CheckFacts(
        backend="trace",
        spec="pytest_torchexport.backends.trace:TraceBackend",
        device="cpu",
        test="test_gate",
        nodeid="test_gate.py::test_gate",
        options=Options.build(),
        module=_module(0.5),
        inputs=((torch.ones(2, 3),), {}),
        sequence=None,
    )
    return dataclasses.replace(base, **changed)


#: One other value for each keyed field of ``CheckFacts``.
CHANGED = {
    "backend": "export",
    "spec": "my_backends:Mine",
    "device": "cuda",  # only hashed: no GPU needed
    "test": "test_other",
    "nodeid": "test_gate.py::test_other",
    "options": Options.build(rtol=1e-2),
    "module": _module(0.25),
    "inputs": ((torch.full((2, 3), 2.0),), {}),
    "sequence": [((torch.ones(2, 3),), {}), ((torch.zeros(2, 3),), {})],
    "size_budget": False,  # TORCHEXPORT_SIZE_LIMITS=off: the whole declared range, a wider search
    "as_called": "0" * 64,
    "method": "encode",
}


def test_every_keyed_fact_has_a_case_here():
    keyed = {f.name for f in dataclasses.fields(CheckFacts)} - NOT_KEYED
    assert set(CHANGED) == keyed


@pytest.mark.parametrize("name", sorted(CHANGED))
def test_changing_one_fact_changes_the_key(name):
    key, _ = check_key(_facts())
    assert check_key(_facts())[0] == key  # the same facts, built again: the same key
    assert check_key(_facts(**{name: CHANGED[name]}))[0] != key


def test_where_it_is_kept_and_the_memo_are_not_in_the_key(tmp_path):
    key, _ = check_key(_facts())
    shared = CallDigests({}, "call-0")
    assert check_key(_facts(store=Cache(tmp_path), digests=shared))[0] == key


def test_one_calls_digest_is_computed_once_for_all_its_backends():
    module, memo = _module(0.5), {}
    first = check_key(_facts(module=module, digests=CallDigests(memo, "call-0")))[0]
    assert list(memo) == [("call-0", id(module))]
    with torch.no_grad():
        module.weight.fill_(9.0)
    # The memo answers for the same call (its module does not change while the memo lives) ...
    assert check_key(_facts(module=module, digests=CallDigests(memo, "call-0")))[0] == first
    # ... where a key computed afresh sees the weight.
    assert check_key(_facts(module=module))[0] != first
    # Another recorded call of the test: its own digest.
    check_key(_facts(module=module, digests=CallDigests(memo, "call-1")))
    assert len(memo) == 2


def test_a_module_keyed_as_called_is_keyed_by_that_digest_not_by_its_state_now():
    """The recorder takes the module's digest where the test calls it: the same key whether the
    module checked is a copy taken then or the live module as the body left it."""
    module = _module(0.5)
    at_call = module_digest(module)
    key = check_key(_facts(module=module, as_called=at_call))[0]
    assert key == check_key(_facts(module=_module(0.5), as_called=module_digest(_module(0.5))))[0]
    with torch.no_grad():
        module.weight.fill_(9.0)  # the body trained it after the call
    assert check_key(_facts(module=module, as_called=at_call))[0] == key
    assert check_key(_facts(module=module, as_called=module_digest(module)))[0] != key


def test_a_compare_function_s_file_is_hashed_with_the_run():
    def close(expected, actual):
        return torch.allclose(expected, actual)

    _, files = check_key(_facts(options=Options.build(compare=close)))
    assert files == [__file__]


def test_equal_containers_key_alike_whether_shared_or_not():
    """Two places holding one dict, or two equal dicts (torch.fx nodes' ``meta`` differ so between
    two runs of one e3nn test), are the same module to the key; their contents still count."""
    shared, apart, other = (_module(0.5) for _ in range(3))
    meta = {"in_lin_chain": 36}
    shared.nodes = [meta, meta]
    apart.nodes = [{"in_lin_chain": 36}, {"in_lin_chain": 36}]
    other.nodes = [{"in_lin_chain": 36}, {"in_lin_chain": 37}]
    key = check_key(_facts(module=shared))[0]
    assert check_key(_facts(module=apart))[0] == key
    assert check_key(_facts(module=other))[0] != key
    cycle: list[object] = []
    cycle.append(cycle)  # a container inside itself is still keyed, by a reference
    apart.loop = cycle
    assert check_key(_facts(module=apart))[0] != key
