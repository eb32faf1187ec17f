"""SPEC §2 events, version 1: the pydantic models are the single source of the wire schema.

One discriminated union on ``kind``. Unknown extra fields are kept. ``parse_event`` turns one raw
line (bytes or str) into a validated event, or raises ``InvalidEvent`` with a one-line reason.
``parse_lines`` does the same for a batch (the sequencer's), validating into plain dicts with schemas
derived from the models' own core schemas.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Union

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from pydantic_core import SchemaSerializer, SchemaValidator, core_schema

from streams.companies import slugify
from streams.lines import MAX_LINE_BYTES, to_utc

# the longest raw line sent on whole. A longer one cannot be an event, and may not fit a Kafka record (a
# file of one 30 MB line): its first RAW_LIMIT bytes go on, with its length, so that its dead letter says
# what it was
RAW_LIMIT = 1024 * 1024
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")

Seniority = Literal[
    "intern", "junior", "mid", "senior", "staff", "principal", "manager", "director", "vp", "c_level", "founder", "unknown"
]
KEY_SENIORITIES: frozenset[str] = frozenset({"principal", "director", "vp", "c_level", "founder"})
Reason = Literal["voluntary", "layoff", "acquihire", "unknown"]
KINDS = ("hiring", "departure", "funding", "model_release")


class InvalidEvent(ValueError):
    """A line that breaks SPEC §2; its message is the one-line dead-letter reason."""


UtcDateTime = Annotated[datetime, BeforeValidator(to_utc)]
Text = Annotated[str, Field(max_length=10_000)]


class EventBase(BaseModel):
    """Fields shared by every kind."""

    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False, frozen=True)

    event_id: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="unique id; derived from the content when absent"
    )
    company: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        description="the organisation the event is about, as the source spells it"
    )
    occurred_at: UtcDateTime = Field(description="event time; a date means 00:00 UTC; no zone means UTC")
    source: Text | None = Field(default=None, description="provenance, e.g. epoch, aiwatch, http, synthetic")
    region: Text | None = Field(default=None, description="e.g. US, EU, UK, CN, Asia")
    schema_version: int = Field(default=1, ge=1, le=1, description="wire format version")

    @field_validator("company")
    @classmethod
    def _company_has_a_name(cls, value: str) -> str:
        if not (_ASCII_ALNUM.search(value) or slugify(value)):  # an ASCII letter or digit always survives slugify
            raise ValueError("company has no letters or digits")
        return value


class PeopleFields(BaseModel):
    """Fields of hiring and departure events."""

    person: Text | None = None
    role: Text | None = None
    seniority: Seniority = "unknown"
    headcount: int = Field(default=1, ge=1, le=10_000_000, description="people in this event")


class HiringEvent(EventBase, PeopleFields):
    kind: Literal["hiring"]
    from_company: Annotated[str, Field(max_length=200)] | None = Field(default=None, description="where the person came from")


def _absent_reason(value: Any) -> Any:
    return "unknown" if value is None else value


class DepartureEvent(EventBase, PeopleFields):
    kind: Literal["departure"]
    to_company: Annotated[str, Field(max_length=200)] | None = Field(default=None, description="where the person went")
    reason: Annotated[Reason, BeforeValidator(_absent_reason)] = Field(
        default="unknown",
        description="why they left: layoff (the employer cut the job), acquihire (a team moved to an acquirer),"
        " voluntary (they chose to leave), unknown; null is the same as absent",
    )


class FundingEvent(EventBase):
    kind: Literal["funding"]
    amount_usd: float = Field(ge=0, le=1e15, description="amount raised in US dollars")
    round: Text | None = Field(default=None, description="seed, series_a … series_f, growth, debt, grant, corporate, ipo, other")
    investors: list[Text] | None = None


class ModelReleaseEvent(EventBase):
    kind: Literal["model_release"]
    model_name: Annotated[str, Field(min_length=1, max_length=500)]
    modality: Text | None = None
    parameters: float | None = Field(default=None, ge=0)
    open_weights: bool | None = None


Event = Annotated[Union[HiringEvent, DepartureEvent, FundingEvent, ModelReleaseEvent], Field(discriminator="kind")]
# the field in which a kind names its counterparty (SPEC §2: a departure's to_company, a hiring's from_company);
# on any other kind a field of that name is an extra one, kept in the payload but naming no counterparty
COUNTERPARTY_FIELDS: dict[str, str] = {
    model.model_fields["kind"].annotation.__args__[0]: name
    for model in (HiringEvent, DepartureEvent, FundingEvent, ModelReleaseEvent)
    for name in ("to_company", "from_company") if name in model.model_fields}
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the wire format, derived from the models."""
    schema = EVENT_ADAPTER.json_schema()
    schema["title"] = "ai-signals event, schema_version 1"
    return schema


def _reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            parts.append(f"kind: missing or not one of {', '.join(KINDS)}")
            continue
        loc = ".".join(str(p) for p in err["loc"] if p not in KINDS) or "event"
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc != "event" else msg)
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def derive_event_id(event: BaseModel) -> str:
    """Deterministic id from the content: the same fact sent twice gets the same id."""
    return _content_id(event.model_dump(mode="json", exclude={"event_id"}, exclude_none=True))


def _content_id(content: dict) -> str:
    if content.get("kind") == "departure" and content.get("reason") == "unknown":
        del content["reason"]  # revision 1.1 added the field: an unknown reason keeps the id an event had before
    digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"ev-{digest[:32]}"


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key[:60])
        out[key] = value
    return out


_STRICT_KEYS = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)
_KEY_END = re.compile(rb'"\s*:')  # the end of every object key (and of a few string contents)


def _key_count(value: dict | list) -> int:
    """Keys in a parsed JSON value, at every depth (a plain loop: this runs for every event)."""
    n = 0
    if value.__class__ is dict:
        n = len(value)
        value = value.values()
    for v in value:
        if v.__class__ is dict or v.__class__ is list:
            n += _key_count(v)
    return n


_SPACED_KEY_END = re.compile(rb'"\s+:')


def _may_repeat_keys(data: bytes, obj: dict) -> bool:
    """False when no key can have been dropped. Settled quickly when the object written back is the very
    same text (each key is written once); otherwise when the text has no more key ends than the parsed
    object has keys (every key ends in ``"`` + spaces + ``:``; strings can only add matches, so this
    never misses one)."""
    try:
        if orjson.dumps(obj) == data:
            return False
    except orjson.JSONEncodeError:  # nested deeper than orjson writes
        pass
    if data.count(b'":') == len(obj) and _SPACED_KEY_END.search(data) is None:
        return False
    return len(_KEY_END.findall(data)) != _key_count(obj)


class _Pairs(list):
    """An object's (key, value) pairs as they came, duplicates included."""


def array_items(data: bytes, parsed: list) -> list[bytes]:
    """The items of a parsed JSON array, each as its own JSON text for ``parse_event``. Where a key may be
    repeated (which parsing kept only the last of), each item is written from its pairs as they came, so
    that validating it still finds the repeat."""
    if not _may_repeat_keys(data, parsed):
        return [orjson.dumps(item) for item in parsed]

    def text(value) -> str:
        if value.__class__ is _Pairs:
            return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + text(v) for k, v in value) + "}"
        if value.__class__ is list:
            return "[" + ",".join(text(v) for v in value) + "]"
        return json.dumps(value, ensure_ascii=False)

    items = json.JSONDecoder(object_pairs_hook=_Pairs).decode(data.decode("utf-8"))
    return [text(item).encode("utf-8", "surrogatepass") for item in items]


def too_long(length: int, truncated: bool = False) -> str:
    """The reason a line over the size limit is not an event (``truncated``: only its first RAW_LIMIT bytes came)."""
    reason = f"line is {length} bytes, over the {MAX_LINE_BYTES}-byte limit"
    return f"{reason}; its first {RAW_LIMIT} bytes are kept" if truncated else reason


def parse_event(raw: bytes | str) -> Event:
    """Validate one raw line; the returned event always has an ``event_id``."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > MAX_LINE_BYTES:
        raise InvalidEvent(too_long(len(data)))
    try:
        obj = orjson.loads(data)  # strict: no NaN/Infinity, valid UTF-8, no lone surrogates
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {str(exc).splitlines()[0][:120]}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"an event must be a JSON object, got {type(obj).__name__}")
    if _may_repeat_keys(data, obj):  # orjson keeps the last of duplicate keys silently: look closer
        try:
            _STRICT_KEYS.decode(data.decode("utf-8"))
        except _DuplicateKey as exc:
            raise InvalidEvent(f"duplicate key {exc.args[0]!r}") from None
        except (ValueError, RecursionError):
            pass  # orjson accepted it; nothing more to learn here
    try:
        event = EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise InvalidEvent(_reason(exc)) from None
    if event.event_id is None:
        event = event.model_copy(update={"event_id": derive_event_id(event)})
    return event


def _as_dict(model: dict) -> dict:
    """A model's core schema that validates into a plain dict (declared fields in order, defaults filled,
    then extras) instead of an instance: the same field rules, a fraction of the cost per event."""
    if model["type"] != "model" or model["schema"]["type"] != "model-fields":
        raise TypeError(f"not a plain model schema: {model['type']}")
    fields = {name: core_schema.typed_dict_field(field["schema"], required=field["schema"]["type"] != "default")
              for name, field in model["schema"]["fields"].items()}
    return core_schema.typed_dict_schema(fields, extra_behavior="allow", config=model["config"])


_UNION = EVENT_ADAPTER.core_schema
_DICT_CHOICES = {kind: _as_dict(choice) for kind, choice in _UNION["choices"].items()}
_DICTS = SchemaValidator(core_schema.list_schema({**_UNION, "choices": _DICT_CHOICES}))
_DICT = SchemaValidator({**_UNION, "choices": _DICT_CHOICES})
_WIRE = {kind: SchemaSerializer(choice) for kind, choice in _DICT_CHOICES.items()}


def parse_lines(raws: list[bytes]) -> list[dict | InvalidEvent]:
    """``parse_event`` over a batch of lines, as plain dicts: the sequencer needs the fields and the wire
    JSON, not model instances. Each item is the validated event of that line (fields of its model, then
    extras; ``event_id`` always set), or the ``InvalidEvent`` that ``parse_event`` raises for it (the same
    reason, taken from the models). A batch with an invalid event is validated again line by line."""
    out: list = [None] * len(raws)
    objs: list[dict] = []
    where: list[int] = []
    loads, limit, dict_ = orjson.loads, MAX_LINE_BYTES, dict
    for i, data in enumerate(raws):
        try:
            if len(data) > limit:
                raise ValueError
            obj = loads(data)
            if obj.__class__ is not dict_ or _may_repeat_keys(data, obj):
                raise ValueError
        except ValueError:  # orjson.JSONDecodeError is one; parse_event finds the exact reason
            out[i] = _invalid(data)
            continue
        objs.append(obj)
        where.append(i)
    try:
        events = _DICTS.validate_python(objs)
    except ValidationError:
        events = [_dict_or_reason(obj) for obj in objs]
    for i, event in zip(where, events):
        if event.__class__ is dict_ and event["event_id"] is None:
            event["event_id"] = _content_id(_WIRE[event["kind"]].to_python(
                event, mode="json", exclude={"event_id"}, exclude_none=True))
        out[i] = event
    return out


def _dict_or_reason(obj: dict) -> dict | InvalidEvent:
    """One line of a batch that failed: its dict, or the reason the models give."""
    try:
        return _DICT.validate_python(obj)
    except ValidationError:
        pass
    try:
        return _model_dict(EVENT_ADAPTER.validate_python(obj))
    except ValidationError as exc:
        return InvalidEvent(_reason(exc))


def _model_dict(event: BaseModel) -> dict:
    """A validated event as ``parse_lines`` returns it: declared fields in order, then extras."""
    return {**event.__dict__, **(event.__pydantic_extra__ or {})}


def _invalid(data: bytes) -> InvalidEvent | dict:
    """A line the quick checks turned away: ``parse_event`` decides, with its exact reason."""
    try:
        return _model_dict(parse_event(data))
    except InvalidEvent as exc:
        return exc


def to_wire(event: BaseModel) -> bytes:
    """Canonical SPEC §2 JSON of a validated event (extras kept, UTC times, nulls dropped)."""
    return event.__pydantic_serializer__.to_json(event, exclude_none=True)


def dict_to_wire(event: dict) -> bytes:
    """``to_wire`` of an event from ``parse_lines``: the same bytes, from the same field serializers."""
    return _WIRE[event["kind"]].to_json(event, exclude_none=True)
