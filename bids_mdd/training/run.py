"""``bids_mdd-train`` from parsed arguments: data, folds, cross-validation, baselines,
permutations, bundles."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import monai
import numpy as np
import pandas as pd
import torch

from bids_mdd import __version__
from bids_mdd.bids.participants import binary_labels, label_column, read_participants
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.metrics import permutation_p_value, permuted_outputs_null
from bids_mdd.models.bundle import Bundle, load_bundle, write_bundle
from bids_mdd.models.device import resolve_device
from bids_mdd.models.inputs import DEFAULT_INPUTS, GM_INPUT, InputSpec
from bids_mdd.models.networks import DFRN_BLOCK_STRIDES, build_network, head_name
from bids_mdd.models.task import Task
from bids_mdd.training import compare
from bids_mdd.training.cv import CVResult, cross_validate_network, fold_metrics
from bids_mdd.training.data import Sample, find_samples, fingerprint, load_volumes
from bids_mdd.training.evidence import build_card, build_domain_model, derivatives_description
from bids_mdd.training.loop import TrainConfig
from bids_mdd.training.options import TrainOptions
from bids_mdd.training.splits import make_folds
from bids_mdd.training.transfer import check_no_shared_data, transfer_factory

LOGGER = logging.getLogger(__name__)

#: Paper A (classification) and paper B (regression) protocol defaults.
PROTOCOLS = {
    Task.CLASSIFICATION: {"architecture": "densenet121", "input": "gm", "folds": 5, "repeats": 1,
                       "batch_size": 8, "lr": 0.01, "weight_decay": 1e-3},
    Task.REGRESSION: {"architecture": "dfrn", "input": "t1w", "folds": 10, "repeats": 5,
                   "batch_size": 4, "lr": 1e-3, "weight_decay": 0.0},
}
#: Output names of a classifier bundle: negative class first, positive (MDD) last.
CLASS_NAMES = ("control", "MDD")
NOT_CLINICAL = "research use only, not for clinical use"
SYNTHETIC_USE = "synthetic data, not for clinical use"


def network_kwargs(architecture: str, n_outputs: int, width: int | None,
                   growth_rate: int | None) -> dict[str, Any]:
    """Keyword arguments of ``build_network`` for the requested width (None: the papers')."""
    family = architecture.rstrip("0123456789")
    kwargs: dict[str, Any] = {"out_channels": n_outputs}
    if family == "densenet":
        kwargs.update(init_features=width or 64, growth_rate=growth_rate or 32)
    elif family == "resnet":
        kwargs.update(width=width or 64)
    else:  # dfrn: every keyword stored, so a later default change cannot alter a bundle
        kwargs.update(channels=[(width or 64) * 2**i for i in range(4)],
                      block_strides=list(DFRN_BLOCK_STRIDES))
    return kwargs


def _is_synthetic(derivatives_dir: Path) -> bool:
    return bool(derivatives_description(derivatives_dir).get("SyntheticData", False))


def _protocol(options: TrainOptions) -> dict[str, Any]:
    defaults = PROTOCOLS[options.task]
    return {key: getattr(options, key) if getattr(options, key, None) is not None else value
            for key, value in defaults.items()}


def train(options: TrainOptions) -> list[Bundle]:
    """Everything ``bids_mdd-train`` does; returns the written bundles."""
    protocol = _protocol(options)
    device = resolve_device(options.device)
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    spec = replace(DEFAULT_INPUTS[protocol["input"]], zoom=options.zoom,
                   normalization=options.normalization)
    source = load_bundle(options.pretrain_from) if options.pretrain_from else None
    if source is not None and source.input_spec.entities != spec.entities:
        raise BidsMddError(f"{options.pretrain_from}: trained on {source.input_spec.entities}, "
                           f"not on the {protocol['input']} input asked for", ExitCode.USAGE)
    if source is not None:
        protocol["architecture"] = source.architecture
        spec = replace(spec, zoom=source.input_spec.zoom,
                       normalization=source.input_spec.normalization)
    participants = read_participants(options.participants)
    samples = [s for s in find_samples(options.derivatives_dir, spec) if s.participant in
               participants.index]
    if not samples:
        raise BidsMddError(f"{options.participants}: no participant has derivatives in "
                           f"{options.derivatives_dir}", ExitCode.NO_FILES)
    config = TrainConfig(epochs=options.epochs, batch_size=protocol["batch_size"],
                         lr=protocol["lr"], weight_decay=protocol["weight_decay"],
                         plateau_patience=options.plateau_patience,
                         backbone_lr_factor=options.backbone_lr_factor if source else 1.0,
                         seed=options.seed, device=device, num_workers=options.num_workers,
                         progress=not options.no_progress)
    site = options.site_column if options.site_column in participants else None
    if options.task == Task.CLASSIFICATION:
        column = label_column(participants, options.label_column, options.participants)
        labels = binary_labels(participants[column], options.positive, options.negative,
                               options.participants)
        jobs = [("classifier", column, labels)]
    else:
        missing = [t for t in options.targets if t not in participants]
        if missing:
            raise BidsMddError(f"{options.participants}: no column(s) {', '.join(missing)}; name "
                               "the targets with --targets", ExitCode.USAGE)
        jobs = [(target, target, pd.to_numeric(participants[target], errors="coerce"))
                for target in options.targets]
    bundles = []
    volumes_cache: dict[str, tuple[np.ndarray, list[str]]] = {}
    for job, column, values in jobs:
        kept = [s for s in samples if pd.notna(values.get(s.participant))]
        if len(kept) < len(samples):
            LOGGER.warning("%s: %d of %d inputs have no usable %s value and are left out", job,
                           len(samples) - len(kept), len(samples), column)
        key = ",".join(s.participant + str(s.session) for s in kept)
        if key not in volumes_cache:
            volumes_cache.clear()
            volumes_cache[key] = load_volumes(kept, spec, config.progress)
        volumes, hashes = volumes_cache[key]
        print_ = fingerprint(kept, hashes)
        if source is not None:
            check_no_shared_data(source, print_, options.allow_shared_ids)
        bundles.append(_train_one(options, protocol, config, spec, source, job, column, values,
                                  kept, volumes, print_, participants, site))
    return bundles


def _train_one(options: TrainOptions, protocol: dict[str, Any], config: TrainConfig,
               spec: InputSpec, source: Bundle | None, job: str, column: str,
               values: pd.Series, samples: list[Sample], volumes: np.ndarray,
               print_: dict[str, list[str]], participants: pd.DataFrame,
               site: str | None) -> Bundle:
    task = options.task
    y = np.array([values[s.participant] for s in samples], dtype=float)
    groups = np.array([str(participants.at[s.participant, site]) if site else s.participant
                       for s in samples])
    folds = make_folds(y, groups, task, protocol["folds"], protocol["repeats"],
                       options.val_fraction, options.seed)
    architecture = protocol["architecture"]
    n_out = 2 if task == Task.CLASSIFICATION else 1
    kwargs = (dict(source.kwargs, out_channels=n_out) if source else
              network_kwargs(architecture, n_out, options.width, options.growth_rate))
    make_net = (transfer_factory(source, n_out) if source else
                (lambda: build_network(architecture, **kwargs)))
    name = options.name or (f"{architecture}-classifier" if task == Task.CLASSIFICATION
                         else f"{architecture}-{job}")
    if task == Task.REGRESSION and options.name and len(options.targets) > 1:
        name = f"{options.name}-{job}"
    work = None
    if options.work_dir:
        work = fold_cache_dir(options.work_dir, name, architecture, kwargs, spec, config, folds,
                              options.pretrain_from)
        work.mkdir(parents=True, exist_ok=True)
    LOGGER.info("%s: %d inputs, %d folds x %d repeats, %s %s on %s", name, len(samples),
                protocol["folds"], protocol["repeats"], architecture, kwargs, spec.shape)
    cv = cross_validate_network(make_net, volumes, y, samples, folds, task, config, work,
                                head=head_name(architecture) if source else None, desc=name)
    results = {f"3D {architecture}" + (" + transfer" if source else ""): cv}
    extra_files = {"cv_predictions.tsv": cv.predictions.to_csv(sep="\t", index=False),
                   "cv_folds.tsv": cv.per_fold.to_csv(sep="\t", index=False)}
    permutation = _permutation(options, cv, make_net, volumes, y, samples, folds, config)
    if options.compare:
        gm_spec = replace(GM_INPUT, zoom=spec.zoom, normalization="none")  # volumes in mL
        gm = volumes if spec == gm_spec else _gm_volumes(options.derivatives_dir, samples,
                                                          gm_spec, config.progress)
        width = {"init_features": options.width or 64, "growth_rate": options.growth_rate or 32}
        names = (compare.BASELINES_CLASSIFICATION if task == Task.CLASSIFICATION
                 else compare.BASELINES_REGRESSION)
        for baseline in names:
            LOGGER.info("baseline %s", baseline)
            results[compare.TITLES[baseline]] = compare.run_baseline(
                baseline, gm, gm_spec, y, samples, folds, task, config, width)
        table = compare.comparison_table(results, task)
        note = (f"# {name}: cross-validated comparison ({len(samples)} inputs, "
                f"{protocol['folds']} folds x {protocol['repeats']} repeats, same folds for "
                f"every method; mean ± SD across folds)")
        if _is_synthetic(options.derivatives_dir):
            note += "\n\nSYNTHETIC DATA: figures describe the generator, not depression."
        extra_files["comparison.tsv"] = table.to_csv(sep="\t", index=False)
        extra_files["comparison.md"] = f"{note}\n\n{table.to_markdown(index=False)}\n"
        LOGGER.info("comparison:\n%s", table.to_string(index=False))
    first_repeat = [i for i, f in enumerate(folds) if f.repeat == 0]
    synthetic = _is_synthetic(options.derivatives_dir)
    outputs = list(CLASS_NAMES) if task == Task.CLASSIFICATION else [column]
    class_counts = ({outputs[0]: int((y == 0).sum()), outputs[1]: int((y == 1).sum())}
                    if task == Task.CLASSIFICATION else None)
    card = build_card(task=task, derivatives_dir=options.derivatives_dir,
                      participants_tsv=options.participants, participants=participants,
                      samples=samples, class_counts=class_counts, site_column=site,
                      site_name=options.site_name, summary=cv.summary, permutation=permutation,
                      synthetic=synthetic, known_limits=list(options.known_limits))
    meta = {
        "name": name, "version": options.model_version, "architecture": architecture,
        "kwargs": kwargs, "task": task,
        "outputs": outputs, "input": spec.to_json(),
        "synthetic": synthetic, "intended_use": SYNTHETIC_USE if synthetic else NOT_CLINICAL,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {"protocol": protocol, "config": asdict(config),
                     "val_fraction": options.val_fraction, "label_column": column,
                     "site_column": site, "n_inputs": len(samples),
                     "n_participants": len({s.participant for s in samples}),
                     "class_counts": class_counts,
                     "pretrained_from": ({"name": source.name, "path": str(source.path)}
                                         if source else None),
                     "weights": "the folds of repeat 1 (an ensemble); metrics over all folds"},
        "metrics": {"cross_validation": cv.summary, "permutation": permutation},
        "card": card.to_json(),
        "data_fingerprint": print_,
        "software": {"bids_mdd": __version__, "torch": torch.__version__,
                     "monai": monai.__version__},
    }
    fold_meta = [{"target_scaling": cv.fold_meta[i]["target_scaling"],
                  "best_epoch": cv.fold_meta[i]["best_epoch"]} for i in first_repeat]
    bundle = write_bundle(options.models_dir / name, meta,
                          [cv.fold_states[i] for i in first_repeat], overwrite=options.overwrite,
                          fold_meta=fold_meta, extra_files=extra_files,
                          domain=build_domain_model(volumes, spec, folds))
    _log_summary(name, cv, permutation)
    LOGGER.info("%s model card: %s", name, card.summary())
    return bundle


def fold_cache_dir(work_root: Path, name: str, architecture: str, kwargs: dict[str, Any],
                   spec: InputSpec, config: TrainConfig, folds: list, pretrain_from: Path | None,
                   ) -> Path:
    """The work folder of one cross-validation's finished folds: the bundle's name and a hash
    of everything its folds' results depend on. Whoever runs the same cross-validation under
    the same root (``bids_mdd-train``, ``benchmarks/paper_tables.py``) reuses its folds."""
    settings = json.dumps([name, architecture, kwargs, spec.to_json(), asdict(config),
                           [f.test.tolist() for f in folds], str(pretrain_from)],
                          sort_keys=True, default=str)
    return work_root / f"{name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def _gm_volumes(derivatives_dir: Path, samples: list[Sample], gm_spec: InputSpec,
                progress: bool) -> np.ndarray:
    """The GM maps of ``samples``' participants and sessions (the baselines' input)."""
    found = {(s.participant, s.session): s for s in find_samples(derivatives_dir, gm_spec)}
    missing = [s for s in samples if (s.participant, s.session) not in found]
    if missing:
        raise BidsMddError(f"{derivatives_dir}: no GM map for sub-{missing[0].participant}; "
                           "the baselines (--compare) need the GM derivatives",
                           ExitCode.NO_FILES)
    return load_volumes([found[(s.participant, s.session)] for s in samples], gm_spec,
                        progress)[0]


#: The statistics a permutation test reports (the first is the headline of older bundles).
PERMUTED_METRICS = {Task.CLASSIFICATION: ("accuracy", "balanced_accuracy", "auc"),
                    Task.REGRESSION: ("pearson_r",)}


def _permutation(options: TrainOptions, cv: CVResult, make_net, volumes: np.ndarray,
                 y: np.ndarray, samples: list[Sample], folds, config: TrainConfig,
                 ) -> dict[str, Any] | None:
    """Label-permutation p-values of the pooled out-of-fold metrics, each against the same
    permutations (``outputs``: within folds against the fixed outputs; ``retrain``: the whole
    cross-validation rerun per permutation)."""
    if options.permutations <= 0:
        return None
    names = PERMUTED_METRICS[cv.task]

    def statistics(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
        metrics = fold_metrics(cv.task, truth, score, cv.threshold)
        return np.array([metrics[name] for name in names])

    predictions = cv.predictions
    truth, score = predictions["y_true"].to_numpy(), predictions["score"].to_numpy()
    observed = statistics(truth, score)
    if options.permutation_mode == "outputs":
        blocks = (predictions["repeat"] * 1000 + predictions["fold"]).to_numpy()
        null = np.stack([permuted_outputs_null(truth, score, blocks, options.permutations,
                                               options.seed,
                                               lambda t, s, k=k: statistics(t, s)[k])
                         for k in range(len(names))], axis=1)
    else:
        rng = np.random.default_rng(options.seed)
        quiet = replace(config, progress=False)
        rows = []
        for k in range(options.permutations):
            permuted = y[rng.permutation(len(y))]
            result = cross_validate_network(make_net, volumes, permuted, samples, folds,
                                            cv.task, quiet, desc=f"permutation {k + 1}")
            rows.append(statistics(result.predictions["y_true"].to_numpy(),
                                   result.predictions["score"].to_numpy()))
        null = np.array(rows)
    by_metric = {name: {"observed": float(observed[k]), "null_mean": float(np.mean(null[:, k])),
                        "null_sd": float(np.std(null[:, k])),
                        "p_value": permutation_p_value(observed[k], null[:, k])}
                 for k, name in enumerate(names)}
    return {"statistic": f"pooled out-of-fold {names[0]}", "mode": options.permutation_mode,
            "n_permutations": options.permutations, **by_metric[names[0]],
            "by_metric": by_metric}


def _log_summary(name: str, cv: CVResult, permutation: dict[str, Any] | None) -> None:
    text = ", ".join(f"{m} {v['mean']:.3f} ± {v['sd']:.3f}" for m, v in cv.summary.items())
    LOGGER.info("%s cross-validation (mean ± SD over %d folds): %s", name, len(cv.per_fold),
                text)
    if permutation:
        LOGGER.info("%s permutation test (%s, %d permutations): observed %.3f, null %.3f ± "
                    "%.3f, p = %.4f", name, permutation["mode"], permutation["n_permutations"],
                    permutation["observed"], permutation["null_mean"], permutation["null_sd"],
                    permutation["p_value"])
