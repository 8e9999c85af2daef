"""The lab applier's parallel apply (tools/applier/apply.py), with resources that need no host.

``handle`` is called as the SDK's worker threads call it: concurrently, each resource
once its dependencies are done. These tests check that calls really overlap, that the
seed alone fixes each resource's delay, that the state stays whole, and that nothing
new starts after a failure.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tools.applier.apply import SEED_ENV, Applier, ApplyError, apply_seed
from tools.stack.synth import RegistrationOptions

RANDOM_BYTES = "random:index/randomBytes:RandomBytes"
KEYS = [f"{RANDOM_BYTES}::r{i}" for i in range(12)]


def _args(typ: str, name: str, inputs: dict[str, Any]) -> SimpleNamespace:
    args = SimpleNamespace(typ=typ, name=name, custom=True, inputs=inputs, provider="")
    args.options = RegistrationOptions()
    return args


def test_the_seeded_delays_of_independent_resources_overlap_and_the_state_keeps_every_one(tmp_path: Path) -> None:
    applier = Applier(tmp_path / "state.json", lambda _: None, seed=7, max_delay_s=0.4)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(KEYS)) as pool:
        list(pool.map(lambda i: applier.handle(_args(RANDOM_BYTES, f"r{i}", {"length": 8})), range(len(KEYS))))
    took = time.perf_counter() - started
    delays = sum(applier.delay(key) for key in KEYS)
    assert took < delays / 2, f"{took:.2f} s for {delays:.2f} s of delays: the resources did not overlap"
    saved = json.loads((tmp_path / "state.json").read_text())
    assert sorted(saved["entries"]) == sorted(KEYS)
    assert sorted(e["seq"] for e in saved["entries"].values()) == list(range(len(KEYS)))
    assert saved["next_seq"] == len(KEYS)
    assert sorted(c.name for c in applier.changes) == sorted(f"r{i}" for i in range(len(KEYS)))


def test_the_seed_alone_fixes_each_delay_and_seeds_differ_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def order(seed: int) -> list[str]:
        applier = Applier(tmp_path / "state.json", seed=seed)
        return sorted(KEYS, key=applier.delay)

    assert order(1) == order(1)
    assert len({tuple(order(seed)) for seed in (1, 2, 3)}) == 3
    assert all(0 <= Applier(tmp_path / "s.json", seed=5).delay(key) < 0.5 for key in KEYS)
    monkeypatch.setenv(SEED_ENV, "42")
    assert apply_seed() == 42 and apply_seed(3) == 3
    monkeypatch.setenv(SEED_ENV, "forty-two")
    with pytest.raises(ApplyError, match=f"{SEED_ENV}='forty-two': expected an integer seed"):
        apply_seed()
    monkeypatch.delenv(SEED_ENV)
    assert len({apply_seed() for _ in range(3)}) > 1  # a fresh one each time


def test_after_a_failure_no_new_resource_starts_and_the_first_error_is_kept(tmp_path: Path) -> None:
    applier = Applier(tmp_path / "state.json", lambda _: None, seed=1, max_delay_s=0)
    with pytest.raises(ApplyError, match="does not emulate example:index:Thing"):
        applier.handle(_args("example:index:Thing", "bad", {}))
    first = applier.first_error
    with pytest.raises(ApplyError, match=f"{RANDOM_BYTES}::later: not applied, example:index:Thing::bad failed first"):
        applier.handle(_args(RANDOM_BYTES, "later", {"length": 8}))
    assert applier.first_error is first
    assert not (tmp_path / "state.json").exists() or "later" not in (tmp_path / "state.json").read_text()


def test_concurrent_calls_share_one_lock_only_around_the_state(tmp_path: Path) -> None:
    """A slow resource does not hold back an independent one (no lock around the work)."""
    applier = Applier(tmp_path / "state.json", lambda _: None, seed=1, max_delay_s=0)
    release = threading.Event()
    finished: list[str] = []
    original = applier._create

    def create(typ: str, name: str, inputs: dict[str, Any], provider_inputs: Any) -> Any:
        if name == "slow":
            assert release.wait(10), "the fast resource never finished while the slow one ran"
        result = original(typ, name, inputs, provider_inputs)
        finished.append(name)
        return result

    applier._create = create  # type: ignore[method-assign]
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(applier.handle, _args(RANDOM_BYTES, "slow", {"length": 8}))
        fast = pool.submit(applier.handle, _args(RANDOM_BYTES, "fast", {"length": 8}))
        fast.result(timeout=10)
        release.set()
        slow.result(timeout=10)
    assert finished == ["fast", "slow"]
