"""Synthetic SPEC §2 events: a realistic steady state and named scenarios, deterministic for a seed."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

REGIONS = ["US", "US", "US", "EU", "UK", "CN", "Asia"]
SENIORITY = ["intern", "junior", "mid", "mid", "mid", "senior", "senior", "staff", "principal", "manager",
             "director", "vp", "c_level", "founder", "unknown"]
# Synthetic events are about fictional organisations only: invented names that name no company of the
# bundled real data (tested), so nothing generated here can be read as news about a real organisation.
STEMS = ["Copperfinch", "Gildenmoor", "Pebblebrook", "Quartzwing", "Hollowpine", "Brightfen", "Emberlake",
         "Frostvale", "Thistlewick", "Marrowgate", "Larkspire", "Ravenholt", "Sablecrest", "Tidewren",
         "Umberfield", "Velvetoak", "Amberquill", "Birchhollow", "Cindermoss", "Duskmere"]
SUFFIXES = ["Labs", "AI", "Research", "Systems", "Intelligence", "Robotics", "Dynamics", "Analytics", "Cognition",
            "Machines"]
INVESTORS = ["Lanternfall Capital", "Oakshade Ventures", "Fernhollow Partners", "Quillstone Fund",
             "Harrowmere Growth", "Brambleton Holdings"]
ROUNDS = ["seed", "series_a", "series_b", "series_c", "series_d", "growth", "debt", "corporate"]
MODALITIES = ["language", "language", "multimodal", "vision", "speech", "code", "video"]
SCENARIOS = ("steady", "talent-war", "conformance-mix")


def fictional_names(n: int) -> list[str]:
    """The first n fictional organisation names, always in the same order (stem × suffix, then numbered)."""
    k = len(STEMS)
    names = [f"{STEMS[i % k]} {SUFFIXES[(i % k + i // k) % len(SUFFIXES)]}" for i in range(k * len(SUFFIXES))]
    names += [f"{STEMS[i % k]} {SUFFIXES[i % len(SUFFIXES)]} {i}" for i in range(max(0, n - len(names)))]
    return names[:n]


def _moment(start: date, days: int, rng: random.Random) -> datetime:
    base = datetime(start.year, start.month, start.day, tzinfo=timezone.utc)
    return base + timedelta(seconds=rng.randrange(days * 86_400))


def steady(n: int, seed: int, start: date, days: int, companies: int = 200) -> Iterator[dict]:
    """Many companies, every kind, heavy-tailed funding; in time order."""
    rng = random.Random(seed)
    names = fictional_names(companies)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(names))]  # a few big labs, a long tail
    moments = sorted(_moment(start, days, rng) for _ in range(n))
    for i, moment in enumerate(moments):
        company = rng.choices(names, weights)[0]
        roll = rng.random()
        event = {"event_id": f"syn-{seed}-{i}", "company": company, "occurred_at": moment.isoformat().replace("+00:00", "Z"),
                 "source": "synthetic", "region": rng.choice(REGIONS)}
        if roll < 0.45:
            event.update(kind="hiring", seniority=rng.choice(SENIORITY), headcount=1 + int(rng.paretovariate(3)) - 1,
                         role="researcher")
            if rng.random() < 0.3:
                event["from_company"] = rng.choice(names)
        elif roll < 0.85:
            event.update(kind="departure", seniority=rng.choice(SENIORITY), headcount=1, role="researcher")
            if rng.random() < 0.5:
                event["to_company"] = rng.choice(names[:20])
        elif roll < 0.93:
            event.update(kind="funding", amount_usd=float(round(1e6 * rng.paretovariate(1.1))),
                         round=rng.choice(ROUNDS), investors=[rng.choice(INVESTORS)])
        else:
            event.update(kind="model_release", model_name=f"{company.split()[0]}-{i}", modality=rng.choice(MODALITIES),
                         open_weights=rng.random() < 0.4)
        yield event


def talent_war(n: int, seed: int, start: date, days: int) -> Iterator[dict]:
    """A large lab loses senior researchers to rivals while committing billions and hiring worldwide."""
    rng = random.Random(seed)
    lab, rivals = "Marrowgate AI", ["Larkspire Labs", "Ravenholt Research", "Sablecrest AI", "Tidewren Systems"]
    background = list(steady(max(n - n // 5, 0), seed, start, days, companies=60))
    story: list[dict] = []
    for i in range(n // 5):
        moment = _moment(start, days, rng)
        roll = rng.random()
        event = {"event_id": f"war-{seed}-{i}", "company": lab, "occurred_at": moment.isoformat().replace("+00:00", "Z"),
                 "source": "synthetic"}
        if roll < 0.55:
            event.update(kind="departure", seniority=rng.choice(["senior", "staff", "principal", "director", "vp"]),
                         to_company=rng.choice(rivals), region="US", role="research scientist")
        elif roll < 0.9:
            event.update(kind="hiring", seniority=rng.choice(["junior", "mid", "senior"]),
                         region=rng.choice(["US", "EU", "Asia", "UK"]), role="engineer")
        else:
            event.update(kind="funding", amount_usd=float(rng.choice([2e9, 5e9, 1e10])), round="corporate",
                         investors=["Lanternfall Capital"])
        story.append(event)
    yield from sorted(background + story, key=lambda e: e["occurred_at"])


def conformance_mix(n: int, seed: int, start: date, days: int) -> Iterator[dict]:
    """Steady state plus the edges: exact duplicates, events out of order by days, and invalid records."""
    rng = random.Random(seed)
    events = list(steady(n, seed, start, days, companies=40))
    out: list[dict] = []
    for i, event in enumerate(events):
        out.append(event)
        if rng.random() < 0.03:
            out.append(dict(event))  # exact duplicate
        if rng.random() < 0.01:
            out.append({"kind": "funding", "company": "Broken", "occurred_at": event["occurred_at"], "amount_usd": -1})
    for _ in range(len(out) // 50):  # move some events a few days out of order
        i = rng.randrange(len(out) - 1)
        j = min(len(out) - 1, i + rng.randrange(1, 200))
        out.insert(j, out.pop(i))
    yield from out


def generate(scenario: str, n: int, seed: int, start: date, days: int) -> Iterator[dict]:
    if scenario == "steady":
        return steady(n, seed, start, days)
    if scenario == "talent-war":
        return talent_war(n, seed, start, days)
    if scenario == "conformance-mix":
        return conformance_mix(n, seed, start, days)
    raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
