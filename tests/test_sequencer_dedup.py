"""The compact set of seen ids: exact membership, whatever the bucket layout."""

from __future__ import annotations

import random

from processors.sequencer import Sequencer, SeenIds, Verdict, id_digest


def test_seen_ids_are_exact_against_a_set():
    rng = random.Random(3)
    seen, reference = SeenIds(), set()
    # few distinct low bits and shared byte patterns: entries that straddle two others must not match
    pool = [rng.getrandbits(64) - 2**63 for _ in range(3000)] + [(k << 14) | 5 for k in range(-2000, 2000)]
    pool += [int.from_bytes(bytes([b] * 8), "little", signed=True) for b in range(256)]
    for _ in range(30_000):
        digest = rng.choice(pool) if rng.random() < 0.7 else rng.getrandbits(64) - 2**63
        assert (digest in seen) == (digest in reference)
        assert seen.add(digest) == (digest not in reference)
        reference.add(digest)
    assert len(seen) == len(reference)
    assert all(d in seen for d in reference)


def _digest(*octets: int) -> int:
    return int.from_bytes(bytes(octets), "little", signed=True)


def test_a_match_across_two_entries_is_not_a_member():
    seen = SeenIds()
    low0, low1 = 0x07, 0x02  # the low 14 bits: both entries and the probe share one bucket
    first = _digest(low0, low1, 0x10, 0x11, low0, low1, 0x12, 0x13)
    second = _digest(low0, low1, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25)
    seen.add(first)
    seen.add(second)
    probe = _digest(low0, low1, 0x12, 0x13, low0, low1, 0x20, 0x21)  # bytes 4..11 of the bucket
    bucket = seen._buckets[probe & seen._mask]
    assert bucket.find(probe.to_bytes(8, "little", signed=True)) == 4
    assert probe not in seen
    assert seen.add(probe) and probe in seen and first in seen and second in seen


def test_sequencer_verdicts_survive_a_restore():
    seq = Sequencer(lateness_days=1)
    assert seq.admit("a", 10 * 86_400_000_000) is Verdict.ACCEPTED
    assert seq.admit("a", 10 * 86_400_000_000) is Verdict.DUPLICATE
    assert seq.admit("b", 8 * 86_400_000_000) is Verdict.LATE
    assert seq.admit("b", 10 * 86_400_000_000) is Verdict.DUPLICATE  # a late id is remembered too
    again = Sequencer(lateness_days=1)
    again.restore(["a", "b"], 10 * 86_400_000_000)
    assert again.admit("a", 11 * 86_400_000_000) is Verdict.DUPLICATE
    assert again.admit("c", 11 * 86_400_000_000) is Verdict.ACCEPTED
    assert id_digest("c") == id_digest("".join(["c"]))


def test_a_seen_id_costs_about_ten_bytes():
    seen = SeenIds()
    for i in range(200_000):
        seen.add(id_digest(f"syn-7-{i}"))
    assert len(seen) == 200_000
    # the fixed part (16,384 empty buckets, ~1 MB) weighs less as ids accumulate: ~9.6 B/id at 1M
    assert seen.nbytes() < 200_000 * 8 + 2_500_000
    assert seen.nbytes() > 200_000 * 8
