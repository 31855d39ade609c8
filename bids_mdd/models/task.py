"""The two kinds of model bids_mdd trains and applies."""

from __future__ import annotations

from enum import StrEnum


class Task(StrEnum):
    """What a model predicts: MDD against controls, or a symptom score. A ``str`` too, so it is
    written to ``model.json`` and compared with the stored value as the word itself."""

    CLASSIFICATION = "classification"
    REGRESSION = "regression"
