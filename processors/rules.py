"""The alert rules of SPEC §4, in plain Python, with thresholds from a TOML rules file.

Each rule says when its condition holds on a day (and at which severity), which events are its
evidence, and how to say why it fired in words a subscriber understands. ``for_days`` and
``keep_firing_for_days`` (Prometheus' ``for`` and ``keep_firing_for``, in days of event time) are
applied by ``processors.alerts``.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from processors.facts import MICROS
from processors.timeline import ATTRITION_AND_HIRES, DEPARTURES, FUNDINGS, LAYOFFS, PEOPLE, RELEASES, WindowTotals

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class RulesFileError(ValueError):
    """The rules file is malformed; the message names the file and the key or line."""


def _people(n: int) -> str:
    return f"{n:,} person" if n == 1 else f"{n:,} people"


def usd(amount: float) -> str:
    """$1.2B, $350M, $40K: how money is said in a summary."""
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if amount >= size:
            return f"${amount / size:,.1f}{unit}".replace(".0" + unit, unit)
    return f"${amount:,.0f}"


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    enabled: bool = True
    window_days: int = Field(ge=1, le=3650)
    for_days: int = Field(default=1, ge=1, le=3650, description="the condition must hold this many days in a row to fire")
    keep_firing_for_days: int = Field(default=14, ge=0, le=3650,
                                      description="a firing alert resolves only after this many more failing days")
    evidence: ClassVar[frozenset[int]]


class TalentDrain(_Rule):
    window_days: int = Field(default=90, ge=1, le=3650)
    min_attrition: int = Field(default=5, ge=0, validation_alias=AliasChoices("min_attrition", "min_departures"))
    min_ratio: float = Field(default=2.0, ge=0)
    critical_ratio: float = Field(default=4.0, ge=0)
    critical_key_departures: int = Field(default=3, ge=0)
    evidence: ClassVar[frozenset[int]] = ATTRITION_AND_HIRES

    def level(self, t: WindowTotals) -> Severity | None:
        """People who chose to leave (layoffs left out) outpace hires: enough of them, at a high enough ratio."""
        ratio = t.talent_drain_ratio
        if t.attrition >= self.min_attrition and ratio >= self.min_ratio:
            if ratio >= self.critical_ratio or t.key_departures >= self.critical_key_departures:
                return "critical"
            return "warning"
        return None

    def summary(self, name: str, t: WindowTotals) -> str:
        text = (f"{name}: {_people(t.attrition)} left in {self.window_days} days against {t.hires:,} "
                f"hire{'' if t.hires == 1 else 's'}")
        if t.key_departures:
            text += f", {t.key_departures:,} of them senior"
        if t.layoffs:
            text += f" (layoffs of {t.layoffs:,} not counted)"
        return text


class TalentPoaching(_Rule):
    window_days: int = Field(default=90, ge=1, le=3650)
    min_departures: int = Field(default=3, ge=1)
    severity: Severity = "warning"
    evidence: ClassVar[frozenset[int]] = DEPARTURES

    def pair_level(self, departures_to_counterparty: int) -> Severity | None:
        """Company A loses at least ``min_departures`` people (layoffs left out) to one counterparty B."""
        return self.severity if departures_to_counterparty >= self.min_departures else None

    def summary(self, name: str, counterparty: str, departures_to_counterparty: int) -> str:
        return f"{name} lost {_people(departures_to_counterparty)} to {counterparty} in {self.window_days} days"


class WorkforceReduction(_Rule):
    window_days: int = Field(default=30, ge=1, le=3650)
    min_layoffs: int = Field(default=100, ge=0)
    critical_layoffs: int = Field(default=1000, ge=0)
    evidence: ClassVar[frozenset[int]] = LAYOFFS

    def level(self, t: WindowTotals) -> Severity | None:
        """The employer cut jobs: a layoff is a workforce reduction, not a talent drain."""
        if t.layoffs >= self.min_layoffs:
            return "critical" if t.layoffs >= self.critical_layoffs else "warning"
        return None

    def summary(self, name: str, t: WindowTotals) -> str:
        return f"{name} cut {t.layoffs:,} job{'' if t.layoffs == 1 else 's'} in {self.window_days} days"


class FundingSurge(_Rule):
    window_days: int = Field(default=30, ge=1, le=3650)
    min_usd: float = Field(default=1e9, ge=0)
    critical_usd: float = Field(default=1e10, ge=0)
    evidence: ClassVar[frozenset[int]] = FUNDINGS

    def level(self, t: WindowTotals) -> Severity | None:
        """Money raised in the window crosses the surge threshold (compared in exact micro-dollars)."""
        if t.funding_micro >= round(self.min_usd * MICROS):
            return "critical" if t.funding_micro >= round(self.critical_usd * MICROS) else "warning"
        return None

    def summary(self, name: str, t: WindowTotals) -> str:
        rounds = f"{t.funding_rounds} round{'' if t.funding_rounds == 1 else 's'}"
        return f"{name} raised {usd(t.funding_usd)} in {self.window_days} days ({rounds})"


class ReleaseBurst(_Rule):
    window_days: int = Field(default=30, ge=1, le=3650)
    min_releases: int = Field(default=3, ge=1)
    severity: Severity = "info"
    evidence: ClassVar[frozenset[int]] = RELEASES

    def level(self, t: WindowTotals) -> Severity | None:
        return self.severity if t.model_releases >= self.min_releases else None

    def summary(self, name: str, t: WindowTotals) -> str:
        return f"{name} released {t.model_releases} models in {self.window_days} days"


class HiringSpree(_Rule):
    window_days: int = Field(default=30, ge=1, le=3650)
    min_hires: int = Field(default=20, ge=0)
    min_hires_per_departure: float = Field(default=3.0, ge=0)
    severity: Severity = "info"
    evidence: ClassVar[frozenset[int]] = PEOPLE

    def level(self, t: WindowTotals) -> Severity | None:
        if t.hires >= self.min_hires and t.hires >= self.min_hires_per_departure * max(t.departures, 1):
            return self.severity
        return None

    def summary(self, name: str, t: WindowTotals) -> str:
        return (f"{name} hired {_people(t.hires)} in {self.window_days} days against {t.departures:,} "
                f"departure{'' if t.departures == 1 else 's'}")


class RuleSet(BaseModel):
    """The six rules; a rule left out of a file keeps its defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    talent_drain: TalentDrain = TalentDrain()
    talent_poaching: TalentPoaching = TalentPoaching()
    workforce_reduction: WorkforceReduction = WorkforceReduction()
    funding_surge: FundingSurge = FundingSurge()
    release_burst: ReleaseBurst = ReleaseBurst()
    hiring_spree: HiringSpree = HiringSpree()

    def company_rules(self) -> list[tuple[str, _Rule]]:
        """(name, rule) of the enabled per-company rules (every rule but talent_poaching)."""
        return [(name, getattr(self, name)) for name in type(self).model_fields
                if name != "talent_poaching" and getattr(self, name).enabled]


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
