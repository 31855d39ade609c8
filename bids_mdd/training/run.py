"""``bids_mdd-train`` from parsed arguments: data, folds, cross-validation, baselines,
permutations, bundles."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import monai
import numpy as np
import pandas as pd
import torch

from bids_mdd import __version__
from bids_mdd.bids.participants import binary_labels, label_column, read_participants
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.metrics import permutation_p_value, permuted_outputs_null, permuted_within
from bids_mdd.models.bundle import Bundle, load_bundle, write_bundle
from bids_mdd.models.card import ModelCard
from bids_mdd.models.device import resolve_device
from bids_mdd.models.harmonization import BundleHarmonization
from bids_mdd.models.inputs import DEFAULT_INPUTS, GM_INPUT, InputSpec
from bids_mdd.models.networks import DFRN_BLOCK_STRIDES, build_network, head_name
from bids_mdd.models.task import Task
from bids_mdd.training import compare
from bids_mdd.training.cv import (
    CVResult,
    cross_validate_network,
    fold_metrics,
    permutation_blocks,
)
from bids_mdd.training.data import Sample, find_samples, fingerprint, load_volumes
from bids_mdd.training.evidence import build_card, build_domain_model, derivatives_description
from bids_mdd.training.harmonization import FoldHarmonizer
from bids_mdd.training.loop import TrainConfig
from bids_mdd.training.options import Protocol, TrainOptions
from bids_mdd.training.splits import CvScheme, Fold, leave_site_out_folds, make_folds
from bids_mdd.training.transfer import check_no_shared_data, transfer_factory

LOGGER = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class _Run:
    """What every bundle of one ``bids_mdd-train`` call shares."""

    options: TrainOptions
    protocol: Protocol
    config: TrainConfig
    spec: InputSpec
    source: Bundle | None  # transfer learning's source bundle
    participants: pd.DataFrame
    site: str | None  # the participants.tsv column no split may cut through


@dataclass(frozen=True)
class _Job:
    """One bundle to train: its target, and the inputs that have a value for it."""

    label: str  # "classifier", or the regression target
    column: str  # the participants.tsv column read
    samples: list[Sample]
    y: np.ndarray
    volumes: np.ndarray
    fingerprint: dict[str, list[str]]


def _train_config(options: TrainOptions, protocol: Protocol, device: str,
                  transfer: bool) -> TrainConfig:
    """The training loop's settings from the options and the protocol."""
    return TrainConfig(epochs=options.epochs, batch_size=protocol.batch_size, lr=protocol.lr,
                       weight_decay=protocol.weight_decay,
                       plateau_patience=options.plateau_patience,
                       backbone_lr_factor=options.backbone_lr_factor if transfer else 1.0,
                       seed=options.seed, device=device, num_workers=options.num_workers,
                       progress=not options.no_progress)


def _targets(options: TrainOptions, participants: pd.DataFrame
             ) -> list[tuple[str, str, pd.Series]]:
    """(label, participants.tsv column, values) of each bundle to train."""
    if options.task == Task.CLASSIFICATION:
        column = label_column(participants, options.label_column, options.participants)
        labels = binary_labels(participants[column], options.positive, options.negative,
                               options.participants)
        return [("classifier", column, labels)]
    missing = [t for t in options.targets if t not in participants]
    if missing:
        raise BidsMddError(f"{options.participants}: no column(s) {', '.join(missing)}; name "
                           "the targets with --targets", ExitCode.USAGE)
    return [(target, target, pd.to_numeric(participants[target], errors="coerce"))
            for target in options.targets]


def train(options: TrainOptions) -> list[Bundle]:
    """Everything ``bids_mdd-train`` does; returns the written bundles."""
    protocol = options.protocol()
    device = resolve_device(options.device)
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    spec = replace(DEFAULT_INPUTS[protocol.input], zoom=options.zoom,
                   normalization=options.normalization)
    source = load_bundle(options.pretrain_from) if options.pretrain_from else None
    if source is not None and source.input_spec.entities != spec.entities:
        raise BidsMddError(f"{options.pretrain_from}: trained on {source.input_spec.entities}, "
                           f"not on the {protocol.input} input asked for", ExitCode.USAGE)
    if source is not None:
        protocol = replace(protocol, architecture=source.architecture)
        spec = replace(spec, zoom=source.input_spec.zoom,
                       normalization=source.input_spec.normalization)
    participants = read_participants(options.participants)
    samples = [s for s in find_samples(options.derivatives_dir, spec) if s.participant in
               participants.index]
    if not samples:
        raise BidsMddError(f"{options.participants}: no participant has derivatives in "
                           f"{options.derivatives_dir}", ExitCode.NO_FILES)
    run = _Run(options, protocol, _train_config(options, protocol, device, source is not None),
               spec, source, participants,
               options.site_column if options.site_column in participants else None)
    bundles = []
    volumes_cache: dict[str, tuple[np.ndarray, list[str]]] = {}
    for label, column, values in _targets(options, participants):
        kept = [s for s in samples if pd.notna(values.get(s.participant))]
        if len(kept) < len(samples):
            LOGGER.warning("%s: %d of %d inputs have no usable %s value and are left out",
                           label, len(samples) - len(kept), len(samples), column)
        key = ",".join(s.participant + str(s.session) for s in kept)
        if key not in volumes_cache:
            volumes_cache.clear()
            volumes_cache[key] = load_volumes(kept, spec, run.config.progress)
        volumes, hashes = volumes_cache[key]
        print_ = fingerprint(kept, hashes)
        if source is not None:
            check_no_shared_data(source, print_, options.allow_shared_ids)
        y = np.array([values[s.participant] for s in kept], dtype=float)
        bundles.append(_train_one(run, _Job(label, column, kept, y, volumes, print_)))
    return bundles


def _folds(run: _Run, job: _Job) -> list[Fold]:
    """The job's folds by ``--cv``; no participant (and, but for ``stratified``, no site) is
    in two parts of a fold."""
    options, protocol = run.options, run.protocol
    scheme = CvScheme(options.cv)
    participants = np.array([s.participant for s in job.samples])
    if scheme == CvScheme.LEAVE_SITE_OUT and run.site is None:
        raise BidsMddError(f"--cv leave-site-out: {options.participants} has no site column "
                           f"{options.site_column!r}; name it with --site-column",
                           ExitCode.USAGE)
    sites = _site_labels(run, job) if run.site else participants
    if scheme == CvScheme.LEAVE_SITE_OUT:
        return leave_site_out_folds(job.y, sites, participants, options.task,
                                    options.val_fraction, options.seed)
    groups = participants if scheme == CvScheme.STRATIFIED else sites
    return make_folds(job.y, groups, options.task, protocol.folds, protocol.repeats,
                      options.val_fraction, options.seed)


def _harmonizer(run: _Run, job: _Job) -> FoldHarmonizer | None:
    """Fold-wise ComBat of the inputs over the site column (``--harmonize``)."""
    options = run.options
    if not options.harmonize:
        return None
    if run.site is None:
        raise BidsMddError(f"--harmonize: {options.participants} has no site column "
                           f"{options.site_column!r}; name it with --site-column",
                           ExitCode.USAGE)
    return FoldHarmonizer(job.volumes, _site_labels(run, job),
                          options.harmonize_empirical_bayes)


def _cache_key(harmonizer: FoldHarmonizer | None) -> str | None:
    """The harmonisation's part of a fold cache's name (caches of fits that kept the target
    had "combat")."""
    if harmonizer is None:
        return None
    return "combat-site-" + ("pooled" if harmonizer.empirical_bayes else "voxelwise")


def _site_labels(run: _Run, job: _Job) -> np.ndarray:
    """Each input's site, from the site column."""
    return np.array([str(run.participants.at[s.participant, run.site]) for s in job.samples])


def _sites_of(run: _Run, job: _Job) -> list[str]:
    """The job's sites, sorted (none without a site column)."""
    return sorted(set(_site_labels(run, job))) if run.site else []


def _bundle_name(options: TrainOptions, architecture: str, job: _Job) -> str:
    if options.task == Task.CLASSIFICATION:
        return options.name or f"{architecture}-classifier"
    if options.name:
        return f"{options.name}-{job.label}" if len(options.targets) > 1 else options.name
    return f"{architecture}-{job.label}"


def _train_one(run: _Run, job: _Job) -> Bundle:
    """Cross-validate one network (and the baselines with ``--compare``), write its bundle."""
    options, protocol, task = run.options, run.protocol, run.options.task
    folds = _folds(run, job)
    architecture = protocol.architecture
    n_out = 2 if task == Task.CLASSIFICATION else 1
    kwargs = (dict(run.source.kwargs, out_channels=n_out) if run.source else
              network_kwargs(architecture, n_out, options.width, options.growth_rate))
    make_net = (transfer_factory(run.source, n_out) if run.source else
                partial(build_network, architecture, **kwargs))
    name = _bundle_name(options, architecture, job)
    harmonizer = _harmonizer(run, job)
    work = None
    if options.work_dir:
        work = fold_cache_dir(options.work_dir, name, architecture, kwargs, run.spec,
                              run.config, folds, options.pretrain_from,
                              harmonization=_cache_key(harmonizer))
        work.mkdir(parents=True, exist_ok=True)
    LOGGER.info("%s: %d inputs, %d folds x %d repeats, %s %s on %s", name, len(job.samples),
                protocol.folds, protocol.repeats, architecture, kwargs, run.spec.shape)
    cv = cross_validate_network(make_net, job.volumes, job.y, job.samples, folds, task,
                                run.config, work,
                                head=head_name(architecture) if run.source else None, desc=name,
                                fold_inputs=harmonizer)
    extra_files = {"cv_predictions.tsv": cv.predictions.to_csv(sep="\t", index=False),
                   "cv_folds.tsv": cv.per_fold.to_csv(sep="\t", index=False)}
    sites = _site_labels(run, job) if run.site is not None else None
    permutation = _permutation(options, cv, make_net, job.volumes, job.y, job.samples, folds,
                               run.config, harmonizer, sites)
    if options.compare:
        method = f"3D {architecture}" + (" + transfer" if run.source else "")
        extra_files.update(_comparison(run, job, name, folds, {method: cv}))
    first_repeat = [i for i, f in enumerate(folds) if f.repeat == 0]
    meta, card = _bundle_meta(run, job, name, architecture, kwargs, cv, permutation)
    fold_meta = [{"target_scaling": cv.fold_meta[i]["target_scaling"],
                  "best_epoch": cv.fold_meta[i]["best_epoch"]} for i in first_repeat]
    harmonization, seen = None, job.volumes
    if harmonizer is not None:
        fit, seen = harmonizer.bundle_fit()
        harmonization = BundleHarmonization(fit, str(run.site))
    bundle = write_bundle(options.models_dir / name, meta,
                          [cv.fold_states[i] for i in first_repeat], overwrite=options.overwrite,
                          fold_meta=fold_meta, extra_files=extra_files,
                          domain=build_domain_model(seen, run.spec, folds, harmonizer),
                          harmonization=harmonization)
    _log_summary(name, cv, permutation)
    LOGGER.info("%s model card: %s", name, card.summary())
    return bundle


def _comparison(run: _Run, job: _Job, name: str, folds: list,
                results: dict[str, CVResult]) -> dict[str, str]:
    """The papers' baselines on the same folds (always on the GM maps, in mL), next to the
    network's ``results``: ``comparison.tsv`` and ``comparison.md``."""
    options, task = run.options, run.options.task
    gm_spec = replace(GM_INPUT, zoom=run.spec.zoom, normalization="none")
    gm = job.volumes if run.spec == gm_spec else _gm_volumes(
        options.derivatives_dir, job.samples, gm_spec, run.config.progress)
    width = {"init_features": options.width or 64, "growth_rate": options.growth_rate or 32}
    names = (compare.BASELINES_CLASSIFICATION if task == Task.CLASSIFICATION
             else compare.BASELINES_REGRESSION)
    harmonizer = (FoldHarmonizer(gm, _site_labels(run, job), options.harmonize_empirical_bayes)
                  if options.harmonize else None)  # the GM maps', as the network's inputs
    results = dict(results)
    for baseline in names:
        LOGGER.info("baseline %s", baseline)
        results[compare.TITLES[baseline]] = compare.run_baseline(
            baseline, gm, gm_spec, job.y, job.samples, folds, task, run.config, width,
            harmonizer)
    table = compare.comparison_table(results, task)
    note = (f"# {name}: cross-validated comparison ({len(job.samples)} inputs, "
            f"{run.protocol.folds} folds x {run.protocol.repeats} repeats, same folds for "
            f"every method; mean ± SD across folds)")
    if harmonizer is not None:
        note += ("\n\nEvery method's inputs ComBat-harmonised over the site column, fitted on "
                 "each fold's training part (--harmonize).")
    if _is_synthetic(options.derivatives_dir):
        note += "\n\nSYNTHETIC DATA: figures describe the generator, not depression."
    LOGGER.info("comparison:\n%s", table.to_string(index=False))
    return {"comparison.tsv": table.to_csv(sep="\t", index=False),
            "comparison.md": f"{note}\n\n{table.to_markdown(index=False)}\n"}


def _bundle_meta(run: _Run, job: _Job, name: str, architecture: str, kwargs: dict[str, Any],
                 cv: CVResult, permutation: dict[str, Any] | None
                 ) -> tuple[dict[str, Any], ModelCard]:
    """The bundle's ``model.json`` record and its model card."""
    options, task, source = run.options, run.options.task, run.source
    synthetic = _is_synthetic(options.derivatives_dir)
    outputs = list(CLASS_NAMES) if task == Task.CLASSIFICATION else [job.column]
    class_counts = ({outputs[0]: int((job.y == 0).sum()), outputs[1]: int((job.y == 1).sum())}
                    if task == Task.CLASSIFICATION else None)
    card = build_card(task=task, derivatives_dir=options.derivatives_dir,
                      participants_tsv=options.participants, participants=run.participants,
                      samples=job.samples, class_counts=class_counts, site_column=run.site,
                      site_name=options.site_name, summary=cv.summary, permutation=permutation,
                      synthetic=synthetic, known_limits=[*options.known_limits,
                                                         *_harmonization_limits(
                                                             options, _sites_of(run, job))])
    meta = {
        "name": name, "version": options.model_version, "architecture": architecture,
        "kwargs": kwargs, "task": task,
        "outputs": outputs, "input": run.spec.to_json(),
        "synthetic": synthetic, "intended_use": SYNTHETIC_USE if synthetic else NOT_CLINICAL,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training": {"protocol": asdict(run.protocol), "config": asdict(run.config),
                     "val_fraction": options.val_fraction, "label_column": job.column,
                     "site_column": run.site, "cv": options.cv,
                     "harmonization": (f"ComBat ({_pooling(options)}) of the inputs over "
                                       "the site column alone, fitted on each fold's training "
                                       "part; the bundle's fit (its harmonization entry) is on "
                                       "all participants"
                                       if options.harmonize else None),
                     "n_inputs": len(job.samples),
                     "n_participants": len({s.participant for s in job.samples}),
                     "class_counts": class_counts,
                     "pretrained_from": ({"name": source.name, "path": str(source.path)}
                                         if source else None),
                     "weights": "the folds of repeat 1 (an ensemble); metrics over all folds"},
        "metrics": {"cross_validation": cv.summary, "permutation": permutation},
        "card": card.to_json(),
        "data_fingerprint": job.fingerprint,
        "software": {"bids_mdd": __version__, "torch": torch.__version__,
                     "monai": monai.__version__},
    }
    return meta, card


def _pooling(options: TrainOptions) -> str:
    """How ComBat estimated the site effects, in words."""
    return ("empirical Bayes, pooled across voxels" if options.harmonize_empirical_bayes
            else "each voxel's own site estimates")


def _harmonization_limits(options: TrainOptions, sites: list[str]) -> list[str]:
    """What a bundle trained on harmonised inputs cannot do, for its model card."""
    if not options.harmonize:
        return []
    return [f"trained on ComBat-harmonised inputs (--harmonize) of sites {', '.join(sites)}: "
            "a scan of another site, or without a site in participants.tsv, goes in "
            "unharmonised and its prediction may be shifted by its site (flagged)"]


def fold_cache_dir(work_root: Path, name: str, architecture: str, kwargs: dict[str, Any],
                   spec: InputSpec, config: TrainConfig, folds: list, pretrain_from: Path | None,
                   harmonization: str | None = None) -> Path:
    """The work folder of one cross-validation's finished folds: the bundle's name and a hash
    of everything its folds' results depend on. Whoever runs the same cross-validation under
    the same root (``bids_mdd-train``, ``benchmarks/paper_tables.py``) reuses its folds."""
    parts = [name, architecture, kwargs, spec.to_json(), asdict(config),
             [f.test.tolist() for f in folds], str(pretrain_from)]
    if harmonization is not None:  # (without it, the hash of caches made before it existed)
        parts.append(harmonization)
    settings = json.dumps(parts, sort_keys=True, default=str)
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
                 harmonizer: FoldHarmonizer | None = None, sites: np.ndarray | None = None,
                 ) -> dict[str, Any] | None:
    """Label-permutation p-values of the pooled out-of-fold metrics, each against the same
    permutations (``outputs``: within folds against the fixed outputs; ``retrain``: the whole
    cross-validation rerun per permutation, with ``harmonizer``'s fold-wise ComBat). With
    ``sites`` (each input's), labels are permuted within sites too, keeping each site's
    diagnosis mix: a model that predicts from the site alone then gets p ~ 0.5."""
    if options.permutations <= 0:
        return None
    names = PERMUTED_METRICS[cv.task]

    def statistics(truth: np.ndarray, score: np.ndarray) -> np.ndarray:
        metrics = fold_metrics(cv.task, truth, score, cv.threshold)
        return np.array([metrics[name] for name in names])

    predictions = cv.predictions
    truth, score = predictions["y_true"].to_numpy(), predictions["score"].to_numpy()
    observed = statistics(truth, score)
    site_of = (dict(zip((f"sub-{s.participant}" for s in samples), sites))
               if sites is not None else {})
    if options.permutation_mode == "outputs":
        blocks = permutation_blocks(predictions, site_of)
        null = np.stack([permuted_outputs_null(truth, score, blocks, options.permutations,
                                               options.seed,
                                               lambda t, s, k=k: statistics(t, s)[k])
                         for k in range(len(names))], axis=1)
    else:
        rng = np.random.default_rng(options.seed)
        quiet = replace(config, progress=False)
        rows = []
        for k in range(options.permutations):
            permuted = permuted_within(y, pd.factorize(sites)[0] if sites is not None
                                       else np.zeros(len(y)), rng)
            result = cross_validate_network(
                make_net, volumes, permuted, samples, folds, cv.task, quiet,
                desc=f"permutation {k + 1}",
                fold_inputs=harmonizer)
            rows.append(statistics(result.predictions["y_true"].to_numpy(),
                                   result.predictions["score"].to_numpy()))
        null = np.array(rows)
    by_metric = {name: {"observed": float(observed[k]), "null_mean": float(np.mean(null[:, k])),
                        "null_sd": float(np.std(null[:, k])),
                        "p_value": permutation_p_value(observed[k], null[:, k])}
                 for k, name in enumerate(names)}
    return {"statistic": f"pooled out-of-fold {names[0]}", "mode": options.permutation_mode,
            "within": "folds and sites" if sites is not None else "folds",
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
