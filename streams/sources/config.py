"""SOURCES.toml: which live sources to watch, typed (pydantic). A malformed file is one line naming the key."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class SourcesFileError(ValueError):
    """SOURCES.toml cannot be used; the message is one line and names the offending key."""


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", pattern=r"^[A-Za-z0-9_.-]*$", max_length=64,
                      description="unique name (cursor file, metrics label); default: the type")
    interval_seconds: float = Field(default=3600.0, gt=0, description="time between two polls (without --once)")
    since: date | None = Field(default=None, description="ignore items dated before this day")
    user_agent: str | None = Field(default=None, description="User-Agent header; default: [watch].user_agent")
    timeout_seconds: float = Field(default=30.0, gt=0, description="per request")
    max_requests: int = Field(default=200, ge=1, description="request budget of one poll (retries included)")
    requests_per_second: float = Field(default=2.0, gt=0, description="at most this many request starts a second")
    max_attempts: int = Field(default=5, ge=1, description="attempts per request on 429, 5xx and network errors")
    backoff_seconds: float = Field(default=1.0, ge=0, description="first backoff; doubles per attempt, with jitter")
    max_backoff_seconds: float = Field(default=60.0, ge=0)
    max_retry_after_seconds: float = Field(default=300.0, ge=0,
                                           description="a longer Retry-After gives up this poll instead of waiting")


class HuggingFace(_Base):
    type: Literal["huggingface"]
    organizations: list[str] | dict[str, str] = Field(
        ..., description="Hub organisations; a table maps each to the company name used in events")
    endpoint: str = "https://huggingface.co"
    page_size: int = Field(default=100, ge=1, le=1000)

    @field_validator("organizations")
    @classmethod
    def _some(cls, value):
        if not value:
            raise ValueError("name at least one organisation")
        return value

    def companies(self) -> dict[str, str]:
        return dict(self.organizations) if isinstance(self.organizations, dict) else {o: o for o in self.organizations}


EPOCH_URL = "https://epoch.ai/data/all_ai_models.csv"


class Epoch(_Base):
    type: Literal["epoch"]
    url: str = EPOCH_URL


class SecFormD(_Base):
    type: Literal["sec_form_d"]
    companies: dict[str, int | str] = Field(..., description='{ "Company name" = CIK }')
    user_agent: str = Field(..., description='EDGAR asks for "Name contact@address"')
    requests_per_second: float = Field(default=5.0, gt=0, le=10.0, description="EDGAR allows at most 10")
    submissions_url: str = "https://data.sec.gov/submissions/CIK{cik}.json"
    archives_url: str = "https://www.sec.gov/Archives/edgar/data"

    @field_validator("companies")
    @classmethod
    def _ciks(cls, value: dict) -> dict[str, int]:
        if not value:
            raise ValueError("name at least one company")
        out = {}
        for company, cik in value.items():
            text = str(cik).strip()
            if not re.fullmatch(r"\d{1,10}", text):
                raise ValueError(f"{company!r}: a CIK is up to 10 digits, got {cik!r}")
            out[company] = int(text)
        return out

    @field_validator("user_agent")
    @classmethod
    def _contact(cls, value: str) -> str:
        if "@" not in value or len(value.split()) < 2:
            raise ValueError('EDGAR needs a descriptive User-Agent with a contact address, e.g. "Acme Research ops@acme.example"')
        return value

    @field_validator("submissions_url")
    @classmethod
    def _placeholder(cls, value: str) -> str:
        if "{cik}" not in value:
            raise ValueError("must contain {cik} (the 10-digit, zero-padded CIK)")
        return value


Source = Annotated[Union[HuggingFace, Epoch, SecFormD], Field(discriminator="type")]


class Watch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_agent: str = Field(default="ai-signals live sources",
                            description="User-Agent of sources that do not set their own")
    state_dir: Path | None = Field(default=None, description="where cursors live; default: beside the DuckDB file")


class SourcesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    watch: Watch = Watch()
    source: list[Source] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        seen: set[str] = set()
        for s in self.source:
            name = s.name or s.type
            if name in seen:
                raise ValueError(f"two sources are named {name!r}: give each a distinct name")
            seen.add(name)
        return self

    def named(self) -> list[tuple[str, HuggingFace | Epoch | SecFormD]]:
        return [(s.name or s.type, s) for s in self.source]


def _where(loc: tuple) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif i > 0 and loc[i - 1] != "source" and isinstance(loc[i - 1], int) and item in (
                "huggingface", "epoch", "sec_form_d"):
            continue  # the union's tag, not a key
        else:
            parts.append(str(item))
    return ".".join(parts)


def load_sources(path: Path) -> SourcesConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourcesFileError(f"no such sources file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourcesFileError(f"cannot read sources file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SourcesFileError(f"{path}: not valid TOML: {exc}") from None
    try:
        return SourcesConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(tuple(first["loc"])) or "(top level)"
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "union_tag_invalid" or first["type"] == "union_tag_not_found":
            msg = 'type must be "huggingface", "epoch" or "sec_form_d"'
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SourcesFileError(f"{path}: {where}: {msg}{more}") from None
