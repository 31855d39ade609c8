"""The model card: one line of evidence, a JSON round trip, and a caution for every model whose
evidence does not rise above chance."""

from __future__ import annotations

import json

import pytest

from bids_mdd.models.card import Cohort, Evidence, ModelCard, caution

pytestmark = pytest.mark.unit  # make test-fast

REAL = Cohort(dataset="Resting state with closed eyes", n_participants=72,
              doi="10.18112/openneuro.ds002748.v1.0.5", class_counts={"control": 21, "MDD": 51},
              sites=["ds002748 (one site)"], age_range=(18.0, 63.0))


def _card(p_value: float | None, cohort: Cohort = REAL) -> ModelCard:
    return ModelCard(cohort=cohort,
                     evidence=Evidence("balanced_accuracy", 0.5512, 0.0987, 5, p_value,
                                       1000 if p_value is not None else 0),
                     preprocessing="bids_mdd 0.1.0 (template priors segmentation, full quality)",
                     known_limits=["skull-stripped inputs only"])


def test_summary_names_the_cohort_and_the_evidence() -> None:
    assert _card(0.21).summary() == (
        "trained on 72 scans (51 MDD, 21 control), one site, ages 18-63, OpenNeuro ds002748 "
        "v1.0.5; CV balanced accuracy 0.55 ± 0.10 over 5 folds, permutation p 0.21 "
        "(1000 perm.)")
    untested = _card(None, Cohort("toy", 24, sites=[], synthetic=True)).summary()
    assert untested == ("trained on 24 SYNTHETIC scans, site not recorded, toy; CV balanced "
                        "accuracy 0.55 ± 0.10 over 5 folds, no permutation test")


def test_json_round_trip_keeps_every_field() -> None:
    card = _card(0.004)
    data = json.loads(json.dumps(card.to_json()))
    assert data["summary"] == card.summary()
    assert ModelCard.from_json(data) == card


def test_caution_unless_the_evidence_is_above_chance_on_real_data() -> None:
    assert caution("m", _card(0.004)) is None
    assert "not distinguishable from chance (permutation p 0.21)" in caution("m", _card(0.21))
    assert "was not permutation-tested" in caution("m", _card(None))
    synthetic = Cohort("toy", 24, synthetic=True)
    assert "measured on SYNTHETIC data" in caution("m", _card(0.001, synthetic))
    assert "no model card" in caution("m", None)
