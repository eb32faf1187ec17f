"""The alert rules of SPEC §4, in plain Python, with thresholds from a TOML rules file."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from processors.facts import MICROS
from processors.timeline import DEPARTURES, FUNDINGS, PEOPLE, RELEASES, WindowTotals

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class RulesFileError(ValueError):
    """The rules file is malformed; the message names the file and the key or line."""


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    window_days: int = Field(ge=1, le=3650)


class TalentDrain(_Rule):
    window_days: int = Field(default=90, ge=1, le=3650)
    min_departures: int = Field(default=5, ge=0)
    min_ratio: float = Field(default=2.0, ge=0)
    critical_ratio: float = Field(default=4.0, ge=0)
    critical_key_departures: int = Field(default=3, ge=0)

    def severity(self, t: WindowTotals) -> Severity | None:
        """Departures outpace hires: enough of them, at a high enough ratio."""
        ratio = t.talent_drain_ratio
        if t.departures >= self.min_departures and ratio >= self.min_ratio:
            if ratio >= self.critical_ratio or t.key_departures >= self.critical_key_departures:
                return "critical"
            return "warning"
        return None


class TalentPoaching(_Rule):
    window_days: int = Field(default=90, ge=1, le=3650)
    min_departures: int = Field(default=3, ge=1)
    severity: Severity = "warning"

    def pair_severity(self, departures_to_counterparty: int) -> Severity | None:
        """Company A loses at least ``min_departures`` people to one counterparty B."""
        return self.severity if departures_to_counterparty >= self.min_departures else None


class FundingSurge(_Rule):
    window_days: int = Field(default=30, ge=1, le=3650)
    min_usd: float = Field(default=1e9, ge=0)
    critical_usd: float = Field(default=1e10, ge=0)

    def severity(self, t: WindowTotals) -> Severity | None:
        """Money raised in the window crosses the surge threshold (compared in exact micro-dollars)."""
        if t.funding_micro >= round(self.min_usd * MICROS):
            return "critical" if t.funding_micro >= round(self.critical_usd * MICROS) else "warning"
        return None


class ReleaseBurst(_Rule):
    window_days: int = Field(default=30, ge=1, le=3650)
    min_releases: int = Field(default=3, ge=1)
    severity: Severity = "info"

    def level(self, t: WindowTotals) -> Severity | None:
        return self.severity if t.model_releases >= self.min_releases else None


class HiringSpree(_Rule):
    window_days: int = Field(default=30, ge=1, le=3650)
    min_hires: int = Field(default=20, ge=0)
    min_hires_per_departure: float = Field(default=3.0, ge=0)
    severity: Severity = "info"

    def level(self, t: WindowTotals) -> Severity | None:
        if t.hires >= self.min_hires and t.hires >= self.min_hires_per_departure * max(t.departures, 1):
            return self.severity
        return None


class RuleSet(BaseModel):
    """The five rules; a rule left out of a file keeps its defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    talent_drain: TalentDrain = TalentDrain()
    talent_poaching: TalentPoaching = TalentPoaching()
    funding_surge: FundingSurge = FundingSurge()
    release_burst: ReleaseBurst = ReleaseBurst()
    hiring_spree: HiringSpree = HiringSpree()

    def company_rules(self):
        """(name, window, kinds of evidence, severity function) of the enabled per-company rules."""
        table = [
            ("talent_drain", self.talent_drain, PEOPLE, self.talent_drain.severity),
            ("funding_surge", self.funding_surge, FUNDINGS, self.funding_surge.severity),
            ("release_burst", self.release_burst, RELEASES, self.release_burst.level),
            ("hiring_spree", self.hiring_spree, PEOPLE, self.hiring_spree.level),
        ]
        return [(name, rule.window_days, kinds, fn) for name, rule, kinds, fn in table if rule.enabled]

    @property
    def poaching_evidence(self) -> frozenset[int]:
        return DEPARTURES


def load_rules(path: Path | None = None) -> RuleSet:
    """Read a rules file (TOML); ``None`` means the shipped defaults."""
    if path is None:
        text = resources.files("processors").joinpath("rules.toml").read_text(encoding="utf-8")
        where = "processors/rules.toml"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RulesFileError(f"cannot read rules file {path}: {exc.strerror}") from None
        where = str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesFileError(f"{where}: {exc}") from None
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        raise RulesFileError(f"{where}: {key}: {err['msg']}") from None
