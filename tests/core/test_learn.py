"""The learning report on a synthetic rated matrix: per slot and varied setting, mean stars,
counts and favourites, best first; too few ratings are said and ranked last; settings that
never varied are left out."""

from __future__ import annotations

import itertools

from stablenew.history import Rating
from stablenew.history.learn import learn
from stablenew.records import LoraRef, NormalizedJobRecord
from tests.core.history_support import at, make_record

# Stars a person gave: "oil" beats "photo", "dusk" beats "noon", cfg 7 beats cfg 4.
_STYLE = {"oil": 2, "photo": 0}
_LIGHT = {"dusk": 1, "noon": 0}
_CFG = {7.0: 1, 4.0: 0}


def _matrix() -> list[tuple[NormalizedJobRecord, Rating]]:
    out = []
    for n, (style, light, cfg, batch) in enumerate(
        itertools.product(_STYLE, _LIGHT, _CFG, range(2))
    ):
        rec = make_record(
            matrix_slot_values={"style": style, "light": light},
            cfg_scale=cfg,
            batch_index=batch,
            loras=[LoraRef(name="detail", weight=0.5)],
        )
        stars = 1 + _STYLE[style] + _LIGHT[light] + _CFG[cfg]
        rating = Rating(job_id=rec.job_id, stars=stars, favourite=stars == 5, at=at(n))
        out.append((rec, rating))
    return out


def test_values_rank_by_mean_with_counts_and_favourites() -> None:
    report = learn(_matrix(), pack="demo")
    assert (report.rated, report.favourites) == (16, 2)
    by_name = {d.name: d for d in report.dimensions}
    # Only what varied: sampler, steps, model and the LoRA weight never did.
    assert list(by_name) == ["slot:light", "slot:style", "cfg_scale"]
    style = by_name["slot:style"].values
    assert [(v.value, v.mean, v.ratings, v.favourites) for v in style] == [
        ("oil", 4.0, 8, 2),
        ("photo", 2.0, 8, 0),
    ]
    assert [v.value for v in by_name["slot:light"].values] == ["dusk", "noon"]
    assert [v.value for v in by_name["cfg_scale"].values] == ["7", "4"]
    best = report.combinations[0]
    assert best.values == {"slot:light": "dusk", "slot:style": "oil", "cfg_scale": "7"}
    assert (best.mean, best.ratings, best.favourites, best.enough) == (5.0, 2, 2, False)
    assert report.combinations[-1].mean == 1.0


def test_too_few_ratings_are_said_and_ranked_last() -> None:
    pairs = _matrix()
    # One lone "watercolour" job with 5 stars must not outrank "oil" (8 ratings).
    lone = make_record(matrix_slot_values={"style": "watercolour", "light": "dusk"}, seed=9)
    pairs.append((lone, Rating(job_id=lone.job_id, stars=5, at=at(99))))
    report = learn(pairs, pack="demo")
    style = next(d for d in report.dimensions if d.name == "slot:style")
    assert [(v.value, v.enough) for v in style.values] == [
        ("oil", True),
        ("photo", True),
        ("watercolour", False),
    ]
    assert any("too few" in n and "slot:style=watercolour (1)" in n for n in report.notes)


def test_nothing_rated_says_so() -> None:
    report = learn([], pack="demo")
    assert report.dimensions == []
    assert report.combinations == []
    assert "no rated jobs" in report.notes[0]
