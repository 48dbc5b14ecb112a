"""Learning from ratings: which matrix slot values and settings give the images people keep.

Pure (no Prefect, no storage): :func:`learn` takes rated records and returns, for every matrix
slot and every setting that varied across them (sampler, cfg_scale, steps, model, each LoRA's
weight), the mean stars, the number of ratings and the favourites of each value, best first,
and the same for whole combinations of those values. A value with fewer than ``min_ratings``
ratings is marked as too few to tell and ranked after those with enough.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from stablenew.history.models import Rating
from stablenew.records import NormalizedJobRecord

MIN_RATINGS = 3


class ValueStats(BaseModel):
    """How the jobs with one value (or one combination of values) were judged."""

    value: str
    ratings: int = Field(description="Jobs rated with stars.")
    mean: float | None = Field(description="Mean stars; None when none is rated.")
    favourites: int
    enough: bool = Field(description="At least min_ratings ratings: the mean says something.")


class Dimension(BaseModel):
    """One thing that varied: a matrix slot (``slot:NAME``), a setting, or ``lora:NAME``."""

    name: str
    kind: str = Field(description="slot | setting | lora")
    values: list[ValueStats] = Field(description="Best first; too-few-to-tell ones last.")


class Combination(ValueStats):
    values: dict[str, str] = Field(description="Dimension name -> value.")


class LearnReport(BaseModel):
    pack: str
    rated: int = Field(description="Jobs with stars.")
    favourites: int
    min_ratings: int
    dimensions: list[Dimension]
    combinations: list[Combination] = Field(description="Best first, as values.")
    notes: list[str] = Field(description="What the report cannot tell, in plain words.")


_SETTINGS = ("sampler", "scheduler", "cfg_scale", "steps", "model")


def dimensions_of(record: NormalizedJobRecord) -> dict[str, tuple[str, str]]:
    """``{name: (kind, value)}`` of everything about the record a report can compare."""
    out: dict[str, tuple[str, str]] = {
        f"slot:{name}": ("slot", value) for name, value in record.matrix_slot_values.items()
    }
    for name in _SETTINGS:
        value = getattr(record, name)
        if value is not None:
            out[name] = ("setting", f"{value:g}" if isinstance(value, float) else str(value))
    for lora in record.loras:
        out[f"lora:{lora.name}"] = ("lora", f"{lora.weight:g}")
    return out


@dataclass
class _Tally:
    stars: list[int] = field(default_factory=list)
    favourites: int = 0

    def add(self, rating: Rating) -> None:
        if rating.stars is not None:
            self.stars.append(rating.stars)
        self.favourites += rating.favourite

    def stats(self, value: str, min_ratings: int) -> ValueStats:
        return ValueStats(
            value=value,
            ratings=len(self.stars),
            mean=round(sum(self.stars) / len(self.stars), 3) if self.stars else None,
            favourites=self.favourites,
            enough=len(self.stars) >= min_ratings,
        )


def _best_first(stats: ValueStats) -> tuple[bool, float, int, int, str]:
    return (not stats.enough, -(stats.mean or 0.0), -stats.favourites, -stats.ratings, stats.value)


def learn(
    rated: Iterable[tuple[NormalizedJobRecord, Rating]],
    *,
    pack: str,
    min_ratings: int = MIN_RATINGS,
) -> LearnReport:
    """The report over ``rated`` (records of one pack with their ratings or favourite marks)."""
    pairs = list(rated)
    dims = [dimensions_of(record) for record, _ in pairs]
    kinds: dict[str, str] = {}
    seen: dict[str, set[str]] = {}
    for d in dims:
        for name, (kind, value) in d.items():
            kinds[name] = kind
            seen.setdefault(name, set()).add(value)
    varied = sorted(
        (n for n, values in seen.items() if len(values) > 1),
        key=lambda n: ({"slot": 0, "setting": 1, "lora": 2}[kinds[n]], n),
    )
    per_value: dict[str, dict[str, _Tally]] = {n: {} for n in varied}
    per_combo: dict[tuple[str, ...], _Tally] = {}
    for d, (_, rating) in zip(dims, pairs, strict=True):
        key = tuple(d.get(n, ("", "-"))[1] for n in varied)
        per_combo.setdefault(key, _Tally()).add(rating)
        for n in varied:
            per_value[n].setdefault(d.get(n, ("", "-"))[1], _Tally()).add(rating)
    dimensions = [
        Dimension(
            name=n,
            kind=kinds[n],
            values=sorted(
                (t.stats(v, min_ratings) for v, t in per_value[n].items()), key=_best_first
            ),
        )
        for n in varied
    ]
    combinations = sorted(
        (
            Combination(
                values=dict(zip(varied, key, strict=True)),
                **t.stats(" / ".join(key), min_ratings).model_dump(),
            )
            for key, t in per_combo.items()
        ),
        key=_best_first,
    )
    report_rated = sum(1 for _, r in pairs if r.stars is not None)
    return LearnReport(
        pack=pack,
        rated=report_rated,
        favourites=sum(1 for _, r in pairs if r.favourite),
        min_ratings=min_ratings,
        dimensions=dimensions,
        combinations=combinations,
        notes=_notes(pack, report_rated, varied, dimensions, min_ratings),
    )


def _notes(
    pack: str, rated: int, varied: Sequence[str], dimensions: Sequence[Dimension], least: int
) -> list[str]:
    if rated == 0:
        return [f"no rated jobs of pack {pack!r} yet: rate some with `stablenew rate JOB 1..5`"]
    notes: list[str] = []
    if not varied:
        notes.append("nothing varied across the rated jobs: there is nothing to compare")
    few = [
        f"{d.name}={v.value} ({v.ratings})" for d in dimensions for v in d.values if not v.enough
    ]
    if few:
        notes.append(
            f"too few ratings to tell (fewer than {least}) for: {', '.join(few)}; "
            "their means are shown but ranked last"
        )
    return notes
