"""Company identity: a display name becomes a stable ``company_id`` (slug + alias table)."""

from __future__ import annotations

import re
import tomllib
import unicodedata
from functools import lru_cache
from importlib import resources
from pathlib import Path

_NON_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


class AliasFileError(ValueError):
    """The user's alias file cannot be used."""


def slugify(name: str) -> str:
    """Lower-case slug: runs of non-alphanumerics folded to a single ``-``; empty if nothing is left."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return _NON_ALNUM.sub("-", folded).strip("-")


def _read_aliases(text: str, where: str) -> dict[str, str]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AliasFileError(f"{where}: {exc}") from None
    table = data.get("aliases", {})
    if not isinstance(table, dict):
        raise AliasFileError(f"{where}: [aliases] must be a table")
    mapping: dict[str, str] = {}
    for canonical, spellings in table.items():
        if not isinstance(spellings, list) or not all(isinstance(s, str) for s in spellings):
            raise AliasFileError(f"{where}: aliases.{canonical} must be a list of strings")
        target = slugify(canonical)
        if not target:
            raise AliasFileError(f"{where}: aliases key {canonical!r} has no letters or digits")
        for spelling in spellings:
            mapping[slugify(spelling)] = target
    return mapping


class CompanyNormalizer:
    """Maps company names to ``company_id`` through the shipped alias table plus an optional user file."""

    def __init__(self, extra_file: Path | None = None) -> None:
        shipped = resources.files("streams").joinpath("aliases.toml").read_text(encoding="utf-8")
        self.aliases = _read_aliases(shipped, "streams/aliases.toml")
        if extra_file is not None:
            try:
                text = Path(extra_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise AliasFileError(f"cannot read alias file {extra_file}: {exc.strerror}") from None
            self.aliases.update(_read_aliases(text, str(extra_file)))
        self._cache: dict[str, str] = {}

    def company_id(self, name: str) -> str:
        """The ``company_id`` of a name; empty string when the name has no letters or digits."""
        cached = self._cache.get(name)
        if cached is None:
            slug = slugify(name)
            cached = self.aliases.get(slug, slug)
            if len(self._cache) < 100_000:
                self._cache[name] = cached
        return cached


@lru_cache(maxsize=8)
def normalizer(extra_file: Path | None = None) -> CompanyNormalizer:
    """A shared normaliser per alias file."""
    return CompanyNormalizer(extra_file)
