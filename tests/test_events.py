"""SPEC §2 parsing: the wire format, derived ids, UTC handling and dead-letter reasons."""

from __future__ import annotations

import orjson
import pytest

from streams.companies import CompanyNormalizer, slugify
from streams.events import InvalidEvent, dict_to_wire, parse_event, parse_lines, to_wire


def test_dates_and_offsets_become_utc():
    e = parse_event(b'{"kind":"hiring","company":"X","occurred_at":"2024-04-12T23:30:00-05:00"}')
    assert e.occurred_at.isoformat() == "2024-04-13T04:30:00+00:00"
    assert parse_event(b'{"kind":"hiring","company":"X","occurred_at":"2024-01-01"}').occurred_at.hour == 0
    assert parse_event(b'{"kind":"hiring","company":"X","occurred_at":"2024-01-01T10:00:00"}').occurred_at.tzinfo


def test_derived_id_is_deterministic_and_content_based():
    a = parse_event(b'{"kind":"funding","company":"X","occurred_at":"2024-01-01","amount_usd":5}')
    b = parse_event(b'{"occurred_at":"2024-01-01T00:00:00Z","amount_usd":5,"company":"X","kind":"funding"}')
    c = parse_event(b'{"kind":"funding","company":"X","occurred_at":"2024-01-01","amount_usd":6}')
    assert a.event_id == b.event_id != c.event_id


def test_extra_fields_are_kept_and_defaults_applied():
    e = parse_event(b'{"kind":"departure","company":"X","occurred_at":"2024-01-01","custom":{"a":[1]}}')
    wire = orjson.loads(to_wire(e))
    assert wire["custom"] == {"a": [1]} and wire["seniority"] == "unknown" and wire["headcount"] == 1


@pytest.mark.parametrize("line,reason", [
    (b'{"kind":"hiring"', "not JSON"),
    (b'[1,2]', "JSON object"),
    (b'{"company":"X","occurred_at":"2024-01-01"}', "kind: missing"),
    (b'{"kind":"funding","company":"X","occurred_at":"2024-01-01"}', "amount_usd: Field required"),
    (b'{"kind":"funding","company":"X","occurred_at":"2024-01-01","amount_usd":-1}', "greater than or equal to 0"),
    (b'{"kind":"hiring","company":"X","occurred_at":"2024-02-31"}', "occurred_at"),
    (b'{"kind":"hiring","company":"X","occurred_at":"3024-01-01"}', "year 3024"),
    (b'{"kind":"hiring","company":"","occurred_at":"2024-01-01"}', "company"),
    (b'{"kind":"hiring","company":"---","occurred_at":"2024-01-01"}', "no letters or digits"),
    (b'{"kind":"hiring","company":"X","occurred_at":"2024-01-01","headcount":"3"}', "headcount"),
    (b'{"kind":"hiring","company":"X","occurred_at":"2024-01-01","seniority":"boss"}', "seniority"),
    (b'{"kind":"model_release","company":"X","occurred_at":"2024-01-01"}', "model_name"),
    (b'{"kind":"funding","company":"X","occurred_at":"2024-01-01","amount_usd":NaN}', "not JSON"),
    (b'{"kind":"hiring","company":"X","occurred_at":"2024-01-01","pad":"' + b"p" * 70_000 + b'"}', "over the 65536-byte limit"),
])
def test_invalid_events_have_one_line_reasons(line, reason):
    with pytest.raises(InvalidEvent) as info:
        parse_event(line)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_company_normalisation_and_user_aliases(tmp_path):
    assert slugify("  Google DeepMind!! ") == "google-deepmind"
    n = CompanyNormalizer()
    assert n.company_id("DeepMind") == n.company_id("Google DeepMind") == "google-deepmind"
    assert n.company_id("Facebook AI Research") == n.company_id("FAIR") == "meta"
    extra = tmp_path / "aliases.toml"
    extra.write_text('[aliases]\n"Acme Intelligence" = ["acme", "ACME Labs"]\n')
    assert CompanyNormalizer(extra).company_id("Acme Labs") == "acme-intelligence"


@pytest.mark.parametrize("line, duplicate", [
    (b'{"kind":"hiring","company":"A","occurred_at":"2024-01-01","company":"B"}', "company"),
    (b'{"kind" : "hiring", "company":"A","occurred_at":"2024-01-01","x":{"a":1,"a":2}}', "a"),
    (b'{"kind":"hiring","company":"A","occurred_at":"2024-01-01","x":[{"b":1},{"b":1,"b":2}]}', "b"),
    (b'{"kind":"hiring","company":"A","occurred_at":"2024-01-01","note":"\\":","note":"y"}', "note"),
    (b'{"kind":"hiring","company":"A","occurred_at":"2024-01-01","note" \n:"x","note"\t:"y"}', "note"),
])
def test_duplicate_keys_are_refused_at_any_depth(line, duplicate):
    with pytest.raises(InvalidEvent, match=f"duplicate key '{duplicate}'"):
        parse_event(line)


def test_key_like_text_inside_strings_is_not_a_duplicate():
    e = parse_event(b'{"kind":"hiring","company":"A\\":","occurred_at":"2024-01-01","note":"kind\\":x"}')
    assert e.company == 'A":' and e.model_extra["note"] == 'kind":x'


def _outcome(parse, line):
    try:
        return "ok", to_wire(parse(line))
    except InvalidEvent as exc:
        return "invalid", str(exc)


def test_a_batch_is_parsed_exactly_as_each_line_alone():
    """The sequencer validates a packed batch in one call; every line must get parse_event's verdict and
    reason, whether its batch holds an invalid line or not."""
    valid = [
        b'{"kind":"hiring","company":"X","occurred_at":"2024-04-12T23:30:00-05:00","headcount":3}',
        b'{"kind":"funding","company":"X","occurred_at":"2024-01-01","amount_usd":5}',  # derived id
        b'{"kind":"departure","company":"\xc3\x89cole","occurred_at":"2024-01-01","custom":{"a":[1]}}',
        b'{"kind":"model_release","company":"\xe6\x99\xba\xe8\xb0\xb1","occurred_at":"2024-01-01","model_name":"m"}',
        b'{"kind":"hiring","company":"A\\":","occurred_at":"2024-01-01","note":"kind\\":x"}',
        b'{"kind":"departure","company":"X","occurred_at":"2024-01-01","reason":"layoff","headcount":300}',
        b'{"kind":"departure","company":"X","occurred_at":"2024-01-01","reason":null}',
        b'{"kind":"hiring","company":"X","occurred_at":"2024-01-01","reason":7}',
    ]
    invalid = [line for line, _ in [
        (b'{"kind":"hiring"', 0), (b'[1,2]', 0), (b'{"company":"X","occurred_at":"2024-01-01"}', 0),
        (b'{"kind":"hiring","company":"---","occurred_at":"2024-01-01"}', 0),
        (b'{"kind":"departure","company":"X","occurred_at":"2024-01-01","reason":"fired"}', 0),
        (b'{"kind":"hiring","company":"A","occurred_at":"2024-01-01","company":"B"}', 0),
        (b'{"kind":"hiring","company":"X","occurred_at":"2024-01-01","pad":"' + b"p" * 70_000 + b'"}', 0),
    ]]
    for batch in (valid, valid + invalid, invalid + valid, invalid):
        got = [("invalid", str(r)) if isinstance(r, InvalidEvent) else ("ok", dict_to_wire(r)) for r in parse_lines(batch)]
        assert got == [_outcome(parse_event, line) for line in batch]
    assert parse_lines([]) == []


def test_departure_reason():
    base = {"kind": "departure", "company": "Acme", "occurred_at": "2024-01-01"}
    assert parse_event(orjson.dumps(base)).reason == "unknown"
    assert parse_event(orjson.dumps({**base, "reason": None})).reason == "unknown"
    assert parse_event(orjson.dumps({**base, "reason": "layoff"})).reason == "layoff"
    # an unknown reason is the same fact as no reason: same derived id (the id a 1.0 event had)
    assert parse_event(orjson.dumps({**base, "reason": "unknown"})).event_id == parse_event(orjson.dumps(base)).event_id
    assert parse_event(orjson.dumps({**base, "reason": "layoff"})).event_id != parse_event(orjson.dumps(base)).event_id
    for bad in ("fired", 7, ""):
        with pytest.raises(InvalidEvent, match="^reason: Input should be 'voluntary', 'layoff', 'acquihire' or 'unknown'"):
            parse_event(orjson.dumps({**base, "reason": bad}))
    # on other kinds it is an extra field: kept, not validated
    hire = parse_event(orjson.dumps({"kind": "hiring", "company": "Acme", "occurred_at": "2024-01-01", "reason": 7}))
    assert orjson.loads(to_wire(hire))["reason"] == 7


def test_rules_file_hysteresis_keys(tmp_path):
    from processors.rules import RulesFileError, load_rules

    shipped = load_rules()
    assert all((getattr(shipped, n).for_days, getattr(shipped, n).keep_firing_for_days) == (1, 14)
               for n in type(shipped).model_fields)
    path = tmp_path / "rules.toml"
    path.write_text("[talent_drain]\nfor_days = 3\nkeep_firing_for_days = 0\nmin_departures = 4\n")
    rules = load_rules(path)
    assert (rules.talent_drain.for_days, rules.talent_drain.keep_firing_for_days, rules.talent_drain.min_attrition) == (3, 0, 4)
    for text, key in (("[release_burst]\nfor_days = 0\n", "release_burst.for_days"),
                      ("[workforce_reduction]\nkeep_firing_for_days = -1\n", "workforce_reduction.keep_firing_for_days"),
                      ('[hiring_spree]\nkeep_firing_for_days = "two weeks"\n', "hiring_spree.keep_firing_for_days"),
                      ("[funding_surge]\nfor_days = 1.5\n", "funding_surge.for_days")):
        path.write_text(text)
        with pytest.raises(RulesFileError) as err:
            load_rules(path)
        assert f": {key}: " in str(err.value) and "\n" not in str(err.value)


def test_items_of_an_array_keep_their_duplicate_keys():
    """An event posted inside a JSON array is refused for a repeated key exactly as on its own; the other
    items of the array are untouched."""
    from streams.events import array_items

    body = ('[{"kind":"funding","company":"A","company":"B","occurred_at":"2024-01-01","amount_usd":1},'
            ' {"kind":"funding","company":"\\u00c9cole","occurred_at":"2024-01-01","amount_usd":1,'
            ' "terms":{"x":1,"y":[{"z":1,"z":2}]}}, {"kind":"funding","company":"C","occurred_at":"2024-01-01",'
            ' "amount_usd":1, "ref":123456789012345678901234567890}]').encode()
    first, second, third = array_items(body, orjson.loads(body))
    with pytest.raises(InvalidEvent, match="duplicate key 'company'"):
        parse_event(first)
    with pytest.raises(InvalidEvent, match="duplicate key 'z'"):
        parse_event(second)
    assert parse_event(third).company == "C"
    plain = b'[{"kind":"funding","company":"A","occurred_at":"2024-01-01","amount_usd":1}]'
    assert array_items(plain, orjson.loads(plain)) == [orjson.dumps(orjson.loads(plain)[0])]
