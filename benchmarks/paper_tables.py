"""The papers' tables on a real cohort: every feasible method of paper A (MDD vs control) and
paper B (symptom-score regression) on the same subject-level folds, with the spread over folds,
label-permutation p-values and the papers' own figures beside them. Resumable; asserts nothing.

Inputs: the 72 ds002748 scans' prepared inputs (``../shared/data/ds002748-inputs``, made by
the participant level and ``bids_mdd-train prepare``'s layout; ``--inputs`` also takes a
participant level's derivatives) and the cohort's participants.tsv.

- Table A: LBP + RBF SVM, the 2D slice-wise vote and slices-as-channels networks, ridge on
  AAL2 regional GM (ours), 3D ResNets and DenseNet121/169/201/264, and a DenseNet with paper
  A's transfer (new head at the full LR, backbone LR x 0.001). The source is sex
  classification pretrained, per fold, on that fold's training and validation scans only
  (paper A used ADNI; nothing larger and real is here), checked by the training package's
  leakage guard against the fold's test scans. Stratified 5-fold splits (``--repeats`` x).
- Table B: DFRN on the T1w and ridge on regional GM for each score, paper B's 10 folds x 5
  repeats (``--folds-b``/``--repeats-b``); Pearson r and p per repeat and their range.
- Every row: 1000 (``--permutations``) output permutations within folds, a p for each column;
  the cheap baselines also ``--retrain-permutations`` full reruns of their cross-validation
  with permuted labels.
- ``--only cost``: one epoch of the full-size DenseNet121 (121 x 145 x 121, width 64, batch
  8) and DFRN (182 x 218 x 182, batch 4) on real maps, through the training package's loop
  (full grids: give ``--inputs`` a participant level's derivatives, not the zoom-0.25 folder).

Run: ``.venv/bin/python benchmarks/paper_tables.py [--inputs DIR] [--participants TSV]
[--out DIR] [--only A|B|cost] [--rows NAME ...] [--targets SCORE ...]``. Each finished row is
appended to ``--out``'s ``table_a.tsv`` / ``table_b.tsv`` (in the repository:
``docs/results/paper_tables_ds002748``) with its out-of-fold predictions, wall time, date and
commit; a rerun skips it (delete its folder under ``rows/`` and its line to recompute it).
Finished folds of a network row are kept in ``--work``, so an interrupted row resumes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SCRATCH = REPO.parent / "cohort"
os.environ.setdefault("TEMPLATEFLOW_HOME", str(SHARED / "templateflow"))

from bids_mdd.bids.participants import binary_labels, read_participants  # noqa: E402
from bids_mdd.metrics import permutation_p_value, permuted_outputs_null  # noqa: E402
from bids_mdd.models.bundle import Bundle  # noqa: E402
from bids_mdd.models.inputs import GM_INPUT, T1W_INPUT, InputSpec  # noqa: E402
from bids_mdd.models.networks import build_network, head_name, replace_head  # noqa: E402
from bids_mdd.training import compare  # noqa: E402
from bids_mdd.training.cv import CVResult, assemble, cross_validate_network, fold_metrics  # noqa: E402
from bids_mdd.training.data import Sample, find_samples, fingerprint, load_volumes  # noqa: E402
from bids_mdd.training.loop import TrainConfig, train_network  # noqa: E402
from bids_mdd.training.run import fold_cache_dir, network_kwargs  # noqa: E402
from bids_mdd.training.splits import Fold, make_folds  # noqa: E402
from bids_mdd.training.transfer import check_no_shared_data  # noqa: E402

LOGGER = logging.getLogger("paper_tables")

#: Paper A's figures (accuracy % / recall % / AUC), for the rows we can compare.
PAPER_A = {"lbp-svm": "65.67 / 68.67 / 0.70", "slices-as-channels": "62.50 / 65.88 / 0.68",
           "slicewise-2d": "67.38 / 74.65 / 0.71 (2D DenseNet121)",
           "ridge-regions": "not in paper A",
           "resnet10": "73.26 / 78.46 / 0.75 (ResNet101)",
           "resnet18": "73.47 / 79.33 / 0.75 (ResNet152)",
           "densenet121": "74.26 / 80.20 / 0.76", "densenet169": "75.38 / 81.26 / 0.77",
           "densenet201": "76.53 / 82.59 / 0.79", "densenet264": "77.42 / 83.72 / 0.80",
           "densenet121-transfer": "84.37 / 87.26 / 0.86 (DenseNet264 + ADNI)"}
ROWS_A = tuple(PAPER_A)
#: Paper B's r across 5 runs, per factor (it has no BDI, SDS or RRS: the nearest factors).
PAPER_B = "Anhedonia 0.108-0.216, Sleep 0.103-0.254, Anxiety 0.020-0.152 (factors, not scales)"
TARGETS_B = ("BDI", "Zung_SDS", "RRS-sum")
METRICS_A = ("accuracy", "balanced_accuracy", "recall", "auc")


def _permutation_p(cv: CVResult, metric: str, n: int, seed: int) -> float:
    """p of the pooled out-of-fold ``metric``: labels permuted within folds against the fixed
    outputs (every repeat's folds are their own blocks)."""
    table = cv.predictions
    truth, score = table["y_true"].to_numpy(), table["score"].to_numpy()
    blocks = (table["repeat"] * 1000 + table["fold"]).to_numpy()
    repeats = table["repeat"].to_numpy()

    def statistic(t: np.ndarray, s: np.ndarray) -> float:  # mean over repeats of the pooled
        return float(np.mean([fold_metrics(cv.task, t[repeats == r], s[repeats == r],
                                           cv.threshold)[metric] for r in np.unique(repeats)]))

    observed = statistic(truth, score)
    return permutation_p_value(observed, permuted_outputs_null(truth, score, blocks, n, seed,
                                                               statistic))


def _retrain_p(run: Callable[[np.ndarray], CVResult], y: np.ndarray, observed: CVResult,
               metric: str, n: int, seed: int) -> float:
    """p of ``metric`` against ``n`` reruns of the whole cross-validation on permuted labels."""
    def pooled(cv: CVResult) -> float:
        table = cv.predictions
        return fold_metrics(cv.task, table["y_true"].to_numpy(), table["score"].to_numpy(),
                            cv.threshold)[metric]

    rng = np.random.default_rng(seed)
    null = np.array([pooled(run(y[rng.permutation(len(y))])) for _ in range(n)])
    return permutation_p_value(pooled(observed), null)


def _provenance() -> dict:
    """When, on which commit and how many threads a row was computed."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": commit,
            "threads": torch.get_num_threads()}


class RowStore:
    """Finished rows of one table: a folder each (out-of-fold predictions, per-fold metrics,
    record) and a line each in the table's results file (``<table>.tsv``)."""

    def __init__(self, root: Path, table: str) -> None:
        self.folders = root / "rows" / table
        self.results = root / f"{table}.tsv"

    def finished(self, name: str) -> bool:
        """Whether row ``name`` was kept by an earlier run (then this run skips it)."""
        done = (self.folders / name / "row.json").is_file()
        if done:
            LOGGER.info("%s: %s finished earlier (%s)", self.results.stem, name,
                        self.folders / name)
        return done

    def save(self, name: str, cv: CVResult, record: dict, line: dict) -> None:
        """Keep the row, then append its line (a row without its line is recomputed)."""
        folder = self.folders / name
        folder.mkdir(parents=True, exist_ok=True)
        cv.predictions.to_csv(folder / "predictions.tsv", sep="\t", index=False)
        cv.per_fold.to_csv(folder / "folds.tsv", sep="\t", index=False)
        (folder / "row.json").write_text(json.dumps({**record, "threshold": cv.threshold},
                                                    indent=2) + "\n")
        table = pd.DataFrame([line])
        if self.results.is_file():
            earlier = pd.read_csv(self.results, sep="\t", dtype=str, keep_default_na=False)
            table = pd.concat([earlier[earlier.iloc[:, 0] != line[next(iter(line))]], table])
        self.results.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(self.results, sep="\t", index=False)


def _transfer(architecture: str, kwargs: dict, volumes: np.ndarray, y: np.ndarray,
              sex: np.ndarray, samples: list[Sample], hashes: list[str], folds: list[Fold],
              config: TrainConfig, work: Path) -> CVResult:
    """Paper A's transfer with a per-fold source: sex classification trained on the fold's
    training part (its validation part picks the best epoch), then MDD with a new head; the
    source's scans are checked against the fold's test scans by the leakage guard."""
    scores, extra = [], []
    for fold in folds:
        source_part = np.concatenate([fold.train, fold.val])
        source = Bundle(Path(f"<sex pretraining, {fold.name}>"), {"data_fingerprint": fingerprint(
            [samples[i] for i in source_part], [hashes[i] for i in source_part])})
        check_no_shared_data(source, fingerprint([samples[i] for i in fold.test],
                                                 [hashes[i] for i in fold.test]))
        known = ~np.isnan(sex)
        torch.manual_seed(config.seed + fold.index)
        net = build_network(architecture, **kwargs)
        state = train_network(net, volumes, np.nan_to_num(sex).astype(np.int64),
                              fold.train[known[fold.train]], fold.val[known[fold.val]],
                              "classification", config, desc=f"sex pretraining {fold.name}"
                              ).state
        net.load_state_dict(state)
        backbone = replace_head(net, architecture, 2)
        cv = cross_validate_network(backbone.train, volumes, y, samples, [fold],
                                    "classification",
                                    replace(config, backbone_lr_factor=0.001),
                                    work / fold.name, head=head_name(architecture),
                                    desc=f"transfer {fold.name}")
        scores.append(cv.predictions["score"].to_numpy())
        extra.append({"best_epoch": int(cv.per_fold["best_epoch"].iloc[0])})
    return assemble("classification", samples, folds, y, scores, 0.5, extra)


def table_a(args: argparse.Namespace, participants: pd.DataFrame, config: TrainConfig) -> None:
    spec = replace(GM_INPUT, zoom=args.zoom)
    samples = [s for s in find_samples(args.inputs, spec) if s.participant in
               participants.index]
    y_all = binary_labels(participants["group"], None, None, args.participants)
    samples = [s for s in samples if not np.isnan(y_all[s.participant])]
    y = np.array([y_all[s.participant] for s in samples], float)
    sex = np.array([{"m": 0.0, "f": 1.0}.get(str(participants.at[s.participant,
                                                                  args.sex_column]).lower(),
                                            np.nan) for s in samples])
    folds = make_folds(y, np.array([s.participant for s in samples]), "classification", 5,
                       args.repeats, 0.1, args.seed)
    volumes, hashes = load_volumes(samples, spec, progress=False)
    gm_spec = replace(GM_INPUT, zoom=args.zoom, normalization="none")
    gm = load_volumes(samples, gm_spec, progress=False)[0]
    width = {"init_features": args.width, "growth_rate": args.growth_rate}
    store = RowStore(args.out, "table_a")
    for name in args.rows or ROWS_A:
        if store.finished(name):
            continue
        LOGGER.info("table A: %s", name)
        start = time.monotonic()
        record: dict = _provenance()
        if name in compare.BASELINES_CLASSIFICATION:
            cv = compare.run_baseline(name, gm, gm_spec, y, samples, folds, "classification",
                                      replace(config, epochs=args.epochs_2d), width)
            if name in ("lbp-svm", "ridge-regions") and args.retrain_permutations:
                record["retrain_p_balanced_accuracy"] = _retrain_p(
                    lambda labels, name=name: compare.run_baseline(
                        name, gm, gm_spec, labels, samples, folds, "classification", config,
                        width),
                    y, cv, "balanced_accuracy", args.retrain_permutations, args.seed)
                record["n_retrain_permutations"] = args.retrain_permutations
        else:
            architecture = name.removesuffix("-transfer")
            kwargs = network_kwargs(architecture, 2, args.width, args.growth_rate)
            if name.endswith("-transfer"):
                cv = _transfer(architecture, kwargs, volumes, y, sex, samples, hashes, folds,
                               config, args.work / name)
            else:
                work = fold_cache_dir(args.work, f"ds002748-{architecture}", architecture,
                                      kwargs, spec, config, folds, None)
                cv = cross_validate_network(partial(build_network, architecture, **kwargs),
                                            volumes, y, samples, folds, "classification",
                                            config, work, desc=name)
            record["kwargs"] = kwargs
        record["seconds"] = round(time.monotonic() - start, 1)
        for metric in METRICS_A:
            record[f"p_{metric}"] = _permutation_p(cv, metric, args.permutations, args.seed)
        record["n_permutations"] = args.permutations
        line = _line_a(name, cv, record)
        store.save(name, cv, record, line)
        print(line, flush=True)
    n_mdd = int(y.sum())
    title = (f"Table A: MDD vs control, {len(samples)} participants ({n_mdd} MDD, "
             f"{len(samples) - n_mdd} control), stratified 5-fold x {args.repeats}, grid "
             f"{spec.shape} (zoom {args.zoom}), width {args.width}, growth {args.growth_rate}, "
             f"{args.epochs} epochs (2D networks {args.epochs_2d}); mean ± SD over folds; p: "
             f"{args.permutations} label permutations within folds against the fixed outputs, "
             "of the pooled out-of-fold metric")
    _print_results(store, args.out / "table_a.md", title, ROWS_A)


def _line_a(name: str, cv: CVResult, record: dict) -> dict:
    """A table A row as the results file and the printed table show it."""
    summary = cv.summary
    line: dict = {"row": name}
    for metric in METRICS_A:
        line[metric] = f"{summary[metric]['mean']:.3f} ± {summary[metric]['sd']:.3f}"
        line[f"p {metric}"] = f"{record[f'p_{metric}']:.3f}"
    line["retrain p (bal. acc.)"] = (f"{record['retrain_p_balanced_accuracy']:.3f} "
                                     f"({record['n_retrain_permutations']})"
                                     if "retrain_p_balanced_accuracy" in record else "-")
    return {**line, "s": record["seconds"], "date": record["date"], "commit": record["commit"],
            "paper A (acc / recall / AUC)": PAPER_A.get(name, "")}


def _print_results(store: RowStore, path: Path, title: str, order: tuple[str, ...]) -> None:
    """The table of every finished row (this run's and earlier runs'), in ``order``."""
    if not store.results.is_file():
        return
    table = pd.read_csv(store.results, sep="\t", dtype=str, keep_default_na=False)
    rank = {name: i for i, name in enumerate(order)}
    table = table.sort_values("row", key=lambda rows: rows.map(lambda r: rank.get(r, 99)))
    _print_table(path, title, table)


def _per_repeat_r(cv: CVResult) -> pd.DataFrame:
    """Pearson r and p of the pooled out-of-fold predictions of each repeat."""
    rows = []
    for repeat, part in cv.predictions.groupby("repeat"):
        metrics = fold_metrics("regression", part["y_true"].to_numpy(), part["score"].to_numpy(),
                               0.0)
        rows.append({"repeat": int(repeat), "r": metrics["pearson_r"],
                     "p": metrics["pearson_p"]})
    return pd.DataFrame(rows)


def table_b(args: argparse.Namespace, participants: pd.DataFrame, config: TrainConfig) -> None:
    config = replace(config, batch_size=4, lr=1e-3, weight_decay=0.0, epochs=args.epochs_b)
    t1w_spec = replace(T1W_INPUT, zoom=args.zoom_b)
    gm_spec = replace(GM_INPUT, zoom=args.zoom, normalization="none")
    store = RowStore(args.out, "table_b")
    order = []
    for target in args.targets:
        values = pd.to_numeric(participants[target], errors="coerce")
        samples = [s for s in find_samples(args.inputs, t1w_spec)
                   if s.participant in participants.index and pd.notna(values[s.participant])]
        y = np.array([values[s.participant] for s in samples], float)
        folds = make_folds(y, np.array([s.participant for s in samples]), "regression",
                           args.folds_b, args.repeats_b, 0.1, args.seed)
        for method in ("dfrn", "ridge-regions"):
            name = f"{target}-{method}"
            order.append(name)
            if store.finished(name):
                continue
            LOGGER.info("table B: %s", name)
            start = time.monotonic()
            record: dict = _provenance()
            if method == "dfrn":
                t1w = load_volumes(samples, t1w_spec, progress=False)[0]
                kwargs = network_kwargs("dfrn", 1, args.width_b, None)
                work = fold_cache_dir(args.work, f"ds002748-dfrn-{target}", "dfrn", kwargs,
                                      t1w_spec, config, folds, None)
                cv = cross_validate_network(partial(build_network, "dfrn", **kwargs), t1w, y,
                                            samples, folds, "regression", config, work,
                                            desc=name)
                record["kwargs"] = kwargs
                del t1w
            else:
                gm = load_volumes(_gm_samples(args.inputs, samples, gm_spec), gm_spec,
                                  progress=False)[0]
                cv = compare.run_baseline("ridge-regions", gm, gm_spec, y, samples, folds,
                                          "regression", config, {})
            record.update(seconds=round(time.monotonic() - start, 1),
                          p_pearson_r=_permutation_p(cv, "pearson_r", args.permutations,
                                                     args.seed),
                          n_permutations=args.permutations)
            per_repeat = _per_repeat_r(cv)
            line = {"row": name, "score": target, "n": len(samples), "method": method,
                    "r per repeat": ", ".join(f"{r:.3f}" for r in per_repeat["r"]),
                    "p per repeat": ", ".join(f"{p:.2g}" for p in per_repeat["p"]),
                    "r range": f"{per_repeat['r'].min():.3f} to {per_repeat['r'].max():.3f}",
                    "permutation p (mean r)": f"{record['p_pearson_r']:.3f}",
                    "s": record["seconds"], "date": record["date"], "commit": record["commit"]}
            store.save(name, cv, record, line)
            print(line, flush=True)
    title = (f"Table B: symptom scores, {args.folds_b} folds x {args.repeats_b} repeats; DFRN "
             f"on the T1w grid {t1w_spec.shape} (zoom {args.zoom_b}, width {args.width_b}, "
             f"{args.epochs_b} epochs), ridge on AAL2 regional GM; p per repeat: Pearson's, of "
             f"that repeat's pooled out-of-fold predictions; permutation p: {args.permutations} "
             f"permutations within folds of the mean r over repeats; paper B: {PAPER_B}")
    _print_results(store, args.out / "table_b.md", title, tuple(order))


def _gm_samples(derivatives: Path, samples: list[Sample], spec: InputSpec) -> list[Sample]:
    found = {s.participant: s for s in find_samples(derivatives, spec)}
    return [found[s.participant] for s in samples]


def full_size_cost(args: argparse.Namespace, participants: pd.DataFrame,
                   config: TrainConfig) -> None:
    """Wall time of one epoch of the full-size networks on real maps: the training package's
    own loop (training part of the first of 5 folds, its validation part, precise BN) with
    paper A's batch 8 (DenseNet121 on GM) and paper B's batch 4 (DFRN on the T1w)."""
    rows = []
    labels = binary_labels(participants["group"], None, None, args.participants)
    for architecture, spec, batch, task in (("densenet121", GM_INPUT, 8, "classification"),
                                            ("dfrn", T1W_INPUT, 4, "regression")):
        samples = [s for s in find_samples(args.inputs, spec)
                   if s.participant in participants.index and pd.notna(labels[s.participant])]
        y = np.array([labels[s.participant] for s in samples], float)
        fold = make_folds(y, np.array([s.participant for s in samples]), "classification", 5,
                          1, 0.1, args.seed)[0]
        volumes = load_volumes(samples, spec, progress=False)[0]
        targets = y.astype(np.int64) if task == "classification" else \
            ((y - y.mean()) / y.std()).astype(np.float32)  # any target: the cost is the same
        net = build_network(architecture, **network_kwargs(
            architecture, 2 if task == "classification" else 1, None, None))
        start = time.monotonic()
        train_network(net, volumes, targets, fold.train, fold.val, task,
                      replace(config, epochs=1, batch_size=batch), desc=f"{architecture} cost")
        seconds = time.monotonic() - start
        rows.append({"network": architecture, "input": "x".join(map(str, spec.shape)),
                     "batch": batch, "train / val maps": f"{len(fold.train)} / {len(fold.val)}",
                     "one epoch (s)": round(seconds),
                     "100 epochs x 5 folds (h)": round(seconds * 500 / 3600, 1),
                     "threads": torch.get_num_threads()})
        print(rows[-1], flush=True)
        del net, volumes
    _print_table(args.out / "cost.md", "Full-size training cost on real maps (CPU)",
                 pd.DataFrame(rows))


def _print_table(path: Path, title: str, table: pd.DataFrame) -> None:
    text = f"{title}\n\n{table.to_markdown(index=False)}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"\n{text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=Path, default=SHARED / "data" / "ds002748-inputs",
                        help="prepared inputs (at --zoom), or a participant level's "
                             "derivatives")
    parser.add_argument("--participants", type=Path,
                        default=SHARED / "data" / "ds002748" / "participants.tsv")
    parser.add_argument("--out", type=Path,
                        default=REPO / "docs" / "results" / "paper_tables_ds002748",
                        help="results files and finished rows (in the repository)")
    parser.add_argument("--work", type=Path, default=SCRATCH / "paper_tables-work",
                        help="finished folds of the network rows (outside the repository), "
                             "named as bids_mdd-train names them: tools/train_real_bundles.py "
                             "with the same --work reuses the folds of the rows it bundles")
    parser.add_argument("--only", choices=("A", "B", "cost"), nargs="+", default=["A", "B"])
    parser.add_argument("--rows", nargs="+", choices=ROWS_A)
    parser.add_argument("--zoom", type=float, default=0.25)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--growth-rate", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--epochs-2d", type=int, default=20,
                        help="epochs of the 2D networks (every axial slice is a sample)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--retrain-permutations", type=int, default=100)
    parser.add_argument("--sex-column", default="gender", help="the transfer source's labels")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS_B))
    parser.add_argument("--zoom-b", type=float, default=0.25)
    parser.add_argument("--width-b", type=int, default=8)
    parser.add_argument("--epochs-b", type=int, default=30)
    parser.add_argument("--folds-b", type=int, default=10)
    parser.add_argument("--repeats-b", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s",
                        datefmt="%H:%M:%S")
    torch.use_deterministic_algorithms(True, warn_only=True)
    participants = read_participants(args.participants)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, progress=False)
    start = time.monotonic()
    if "A" in args.only:
        table_a(args, participants, config)
    if "B" in args.only:
        table_b(args, participants, config)
    if "cost" in args.only:
        full_size_cost(args, participants, config)
    print(f"wall time of this run: {time.monotonic() - start:.0f} s on "
          f"{torch.get_num_threads()} threads (rows reused from earlier runs count their own "
          "seconds in the tables)")


if __name__ == "__main__":
    main()
