"""Cross-validation of a network or a baseline estimator on fixed folds, with per-fold
predictions and metrics; finished folds are kept in the work dir so a rerun resumes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from bids_mdd.bids.atomic import atomic_output, write_json
from bids_mdd.metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    classification_metrics,
    regression_metrics,
    summarize,
)
from bids_mdd.models.task import Task
from bids_mdd.training.data import Sample
from bids_mdd.training.loop import TrainConfig, predict, train_network
from bids_mdd.training.splits import Fold

LOGGER = logging.getLogger(__name__)


class Estimator(Protocol):
    """What a baseline offers (scikit-learn style)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Estimator: ...
    def decision_scores(self, X: np.ndarray) -> np.ndarray: ...


@dataclass
class CVResult:
    """Out-of-fold predictions, per-fold metrics and their summary (and fold weights)."""

    task: Task
    predictions: pd.DataFrame
    per_fold: pd.DataFrame
    threshold: float
    fold_states: list[dict[str, torch.Tensor]] = field(default_factory=list)
    fold_meta: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return CLASSIFICATION_METRICS if self.task == Task.CLASSIFICATION else REGRESSION_METRICS

    @property
    def summary(self) -> dict[str, dict[str, float]]:
        return summarize(self.per_fold, self.metric_names)


def fold_metrics(task: Task, y_true: np.ndarray, score: np.ndarray,
                 threshold: float) -> dict[str, float]:
    if task == Task.CLASSIFICATION:
        return classification_metrics(y_true, score, threshold)
    return regression_metrics(y_true, score)


def _rows(samples: list[Sample], fold: Fold, y: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({
        "participant_id": [f"sub-{samples[i].participant}" for i in fold.test],
        "session": [samples[i].session or "n/a" for i in fold.test],
        "repeat": fold.repeat + 1, "fold": fold.index + 1,
        "y_true": y[fold.test], "score": score})


def permutation_blocks(predictions: pd.DataFrame, site_of: dict[str, str] | None = None,
                       ) -> np.ndarray:
    """Each out-of-fold prediction's exchangeability block for label permutations: its repeat
    and fold, and with ``site_of`` (participant_id -> site) its site too, so that permuted
    labels keep each fold's sites' diagnosis mix."""
    keys = predictions[["repeat", "fold"]].copy()
    if site_of:
        keys["site"] = predictions["participant_id"].map(site_of).fillna("")
    return keys.groupby(list(keys.columns), sort=False).ngroup().to_numpy()


def assemble(task: Task, samples: list[Sample], folds: list[Fold], y: np.ndarray,
              scores: list[np.ndarray], threshold: float, extra: list[dict[str, Any]]) -> CVResult:
    per_fold = pd.DataFrame([{"repeat": f.repeat + 1, "fold": f.index + 1, "n_train": len(f.train),
                              "n_val": len(f.val), "n_test": len(f.test),
                              **fold_metrics(task, y[f.test], s, threshold), **e}
                             for f, s, e in zip(folds, scores, extra)])
    predictions = pd.concat([_rows(samples, f, y, s) for f, s in zip(folds, scores)],
                            ignore_index=True)
    return CVResult(task, predictions, per_fold, threshold)


def cross_validate_estimator(make_estimator: Callable[[], Estimator], inputs: np.ndarray,
                             y: np.ndarray, samples: list[Sample], folds: list[Fold], task: Task,
                             threshold: float = 0.0,
                             fold_inputs: Callable[[Fold], np.ndarray] | None = None,
                             ) -> CVResult:
    """Fit a fresh baseline on each fold's training + validation part, score its test part
    (``fold_inputs``: as in :func:`cross_validate_network`)."""
    scores = []
    for fold in folds:
        fit_on = np.concatenate([fold.train, fold.val])
        fold_x = fold_inputs(fold) if fold_inputs is not None else inputs
        estimator = make_estimator().fit(fold_x[fit_on], y[fit_on])
        scores.append(np.asarray(estimator.decision_scores(fold_x[fold.test]), float))
    return assemble(task, samples, folds, y, scores, threshold, [{} for _ in folds])


def cross_validate_network(make_net: Callable[[], nn.Module], inputs: np.ndarray, y: np.ndarray,
                           samples: list[Sample], folds: list[Fold], task: Task,
                           config: TrainConfig, work_dir: Path | None = None,
                           head: str | None = None, desc: str = "model",
                           add_channel: bool = True,
                           fold_inputs: Callable[[Fold], np.ndarray] | None = None) -> CVResult:
    """Train one network per fold (best-validation weights) and predict its test part.

    ``fold_inputs`` gives a fold's own inputs in place of ``inputs`` (its harmonisation,
    fitted on its training part).

    Regression targets are z-scored with the training part's mean and SD (stored per fold) and
    predictions transformed back. With ``work_dir``, each epoch is checkpointed and finished
    folds are reused by a rerun with the same settings.
    """
    scores, states, metas = [], [], []
    for number, fold in enumerate(folds):
        done = work_dir / f"{fold.name}.safetensors" if work_dir else None
        if done is not None and done.is_file():
            meta = json.loads(done.with_suffix(".json").read_text())
            states.append(load_file(str(done)))
            scores.append(np.asarray(meta.pop("test_scores"), dtype=np.float32))
            metas.append(meta)
            LOGGER.info("%s %s: finished earlier, reused from %s", desc, fold.name, done)
            continue
        scaling = {"mean": 0.0, "sd": 1.0}
        if task == Task.REGRESSION:
            fitted = y[fold.train]
            scaling = {"mean": float(fitted.mean()), "sd": float(fitted.std() or 1.0)}
        targets = ((y - scaling["mean"]) / scaling["sd"]).astype(np.float32)
        if task == Task.CLASSIFICATION:
            targets = y.astype(np.int64)
        torch.manual_seed(config.seed + number)
        net = make_net()
        fold_x = fold_inputs(fold) if fold_inputs is not None else inputs
        result = train_network(net, fold_x, targets, fold.train, fold.val, task, config,
                               checkpoint=done.with_suffix(".checkpoint.pt") if done else None,
                               head=head, desc=f"{desc} {fold.name}", add_channel=add_channel)
        net.load_state_dict(result.state)
        raw = predict(net, fold_x, fold.test, config, add_channel)
        score = raw * scaling["sd"] + scaling["mean"] if task == Task.REGRESSION else raw
        meta = {"best_epoch": result.best_epoch, "target_scaling": scaling,
                "history": result.history}
        if done is not None:
            with atomic_output(done) as tmp:
                save_file({k: v.contiguous() for k, v in result.state.items()}, str(tmp))
            write_json(done.with_suffix(".json"), {**meta, "test_scores": score.tolist()})
            done.with_suffix(".checkpoint.pt").unlink(missing_ok=True)
        scores.append(score)
        states.append(result.state)
        metas.append(meta)
    extra = [{"best_epoch": m["best_epoch"]} for m in metas]
    threshold = 0.5 if task == Task.CLASSIFICATION else 0.0
    cv = assemble(task, samples, folds, y, scores, threshold, extra)
    cv.fold_states, cv.fold_meta = states, metas
    return cv
