"""Byte-identical output to another revision's engine, on the bundled real data and on synthetic load.

The baseline is the engine before its compact rewrite (per-day tuple buckets and prefix sums), the one
a held-out replay of six years of real data matched exactly; ``ENGINE_BASELINE=REV`` compares with
another revision. It needs the git history (skipped in a shallow clone without it). The baseline's ``processors/{engine,timeline,indicators,alerts,rules}.py``
are copied into a temporary package; both engines get the same facts in the same order, and every
flush's indicator rows and alert changes must serialise to the same bytes.
"""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from processors.facts import Fact, fact_from_event, fact_tuple
from processors.sequencer import Sequencer, Verdict
from streams.companies import normalizer
from streams.events import parse_event

ROOT = Path(__file__).resolve().parent.parent
BASELINE = os.environ.get("ENGINE_BASELINE", "1a0689d")


def _in_history(revision: str) -> bool:
    try:
        return subprocess.run(["git", "cat-file", "-e", f"{revision}:processors/engine.py"], cwd=ROOT,
                              capture_output=True).returncode == 0
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _in_history(BASELINE), reason=f"revision {BASELINE} is not in this clone's history")
MODULES = ("engine", "timeline", "indicators", "alerts", "rules")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """(engine module, rules module) of the baseline revision."""
    where = tmp_path_factory.mktemp("baseline")
    package = where / "baseline_processors"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in MODULES:
        text = subprocess.run(["git", "show", f"{BASELINE}:processors/{name}.py"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout
        for other in MODULES:
            text = text.replace(f"from processors.{other} import", f"from baseline_processors.{other} import")
        (package / f"{name}.py").write_text(text)
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module("baseline_processors.engine"), importlib.import_module("baseline_processors.rules")
    finally:
        sys.path.remove(str(where))


def real_facts(lateness: float = 7.0, shuffle_seed: int | None = None) -> list[tuple]:
    from aisignals.live import bundled_events
    from streams.adapters import Accounting

    events = sorted((parse_event(orjson.dumps(e)) for _, e in bundled_events(Accounting())), key=lambda e: e.occurred_at)
    if shuffle_seed is not None:  # each event moves back by a few positions: out of order, mostly not late
        rng = random.Random(shuffle_seed)
        for i in range(len(events) - 1, 0, -1):
            j = max(0, i - rng.randrange(0, 15))
            events[i], events[j] = events[j], events[i]
    seq, companies, out = Sequencer(lateness), normalizer(), []
    for event in events:
        fact = fact_from_event(event, companies)
        if seq.admit(fact.event_id, fact.time_us) is Verdict.ACCEPTED:
            out.append(fact_tuple(fact))
    return out


def synthetic_batches(n: int, batch: int) -> list[list[tuple]]:
    """Fact batches as the sequencer emits them (``benchmarks/stages.py``)."""
    from benchmarks.run import synthetic_lines
    from processors.app import Outputs, RawLines, Worker
    from processors.rules import load_rules
    from streams.topics import Topics

    worker = Worker("127.0.0.1:1", Topics("equivalence", 1), load_rules(None), normalizer())
    items = [(f"eq:{i}", line) for i, line in enumerate(synthetic_lines(n))]
    out = []
    for i in range(0, len(items), batch):
        facts = defaultdict(list)
        worker._admit(Outputs(), facts, RawLines.of(items[i : i + batch]), "eq", None)
        out.append([tuple(item[:12]) for item in facts[0]])
    return out


def per_fact(facts: list[tuple], batch: int) -> list[tuple]:
    ops = []
    for i, f in enumerate(facts, 1):
        ops += [("add", f), ("advance", f[4])]
        if i % batch == 0:
            ops.append(("flush",))
    return ops + [("flush",), ("flush_end",)]


def outputs(engine_module, rules_module, ops: list[tuple], update: dict | None = None) -> list[bytes]:
    rules = rules_module.load_rules(None)
    if update:
        rules = rules_module.RuleSet(**{name: getattr(rules, name).model_copy(update=update)
                                        for name in rules_module.RuleSet.model_fields})
    engine, out = engine_module.Engine(rules), []
    for op in ops:
        if op[0] == "add":
            engine.add(Fact(*op[1]))
        elif op[0] == "advance":
            engine.advance(op[1])
        else:
            out.append(orjson.dumps(engine.flush(end_of_input=op[0] == "flush_end")))
    return out


@pytest.mark.parametrize("scenario", ["real_b1", "real_b97", "real_shuffled_b13", "real_F2K5_shuffled_b7",
                                      "real_F3K0_b97", "synthetic_50k_b5000", "synthetic_50k_b700"])
def test_same_bytes_as_the_baseline(baseline, scenario):
    update = None
    if scenario.startswith("synthetic"):
        ops = []
        for facts in synthetic_batches(50_000, int(scenario.rsplit("_b", 1)[1])):
            ops += [("add", f) for f in facts] + [("advance", max(f[4] for f in facts)), ("flush",)]
        ops.append(("flush_end",))
    else:
        shuffled = "shuffled" in scenario
        facts = real_facts(30.0 if shuffled else 7.0, 3 if shuffled else None)
        ops = per_fact(facts, int(scenario.rsplit("_b", 1)[1]))
        if "F2K5" in scenario:
            update = {"for_days": 2, "keep_firing_for_days": 5}
        elif "F3K0" in scenario:
            update = {"for_days": 3, "keep_firing_for_days": 0}
    import processors.engine as current_engine
    import processors.rules as current_rules

    theirs = outputs(*baseline, ops, update)
    ours = outputs(current_engine, current_rules, ops, update)
    assert len(ours) == len(theirs)
    first = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), None)
    assert first is None, f"flush {first} differs:\n{theirs[first][:600]!r}\n{ours[first][:600]!r}"
    assert sum(len(orjson.loads(b)[1]) for b in ours) > 0  # alerts were compared, not only rows
