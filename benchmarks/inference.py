"""Participant-level model step at full size on this machine: time and memory per participant.

Builds full-size bundles with random weights (DenseNet121-3D on the 121 x 145 x 121 GM grid;
one DFRN per symptom factor on the 182 x 218 x 182 T1w grid; ``--folds`` fold models each;
labelled benchmark-only), renders SYNTHETIC participants in MNI space with ``bids_mdd-synth
--mni-derivatives``, loads the models once and then, per participant, prints:

- the classifier's plain forward pass (``torch.inference_mode``, channels_last_3d: what the
  issue's <= 2 s target is about) and its P(MDD) + guided-backprop saliency (forward + backward);
- each DFRN's prediction + attention map (one forward + one guided backward per fold model;
  target <= 15 s per map);
- the whole step as the participant level runs it (all models, NIfTI maps, sidecars, figures,
  predictions table) and the process's peak RSS after it (bounded: it must not grow with the
  number of participants).

Run: ``.venv/bin/python benchmarks/inference.py [--participants 2] [--folds 1]``. Prints
figures; asserts nothing. Only timings from one run compare (this machine's speed drifts).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TEMPLATEFLOW_HOME", str(REPO.parent / "shared" / "templateflow"))

import torch  # noqa: E402

from bids_mdd.bids.names import derivative_path  # noqa: E402
from bids_mdd.bids.outputs import T1wOutputs  # noqa: E402
from bids_mdd.cli.synth import main as synth  # noqa: E402
from bids_mdd.models.bundle import write_bundle  # noqa: E402
from bids_mdd.models.inference import apply_model, load_models  # noqa: E402
from bids_mdd.models.inputs import GM_INPUT, T1W_INPUT  # noqa: E402
from bids_mdd.models.networks import build_network  # noqa: E402
from bids_mdd.participant.predictions import predict_participant  # noqa: E402
from bids_mdd.synth.model import FACTORS  # noqa: E402
from memory import rss_mib  # noqa: E402  (benchmarks/memory.py)


def write_random_bundles(models: Path, folds: int) -> None:
    """Full-size bundles whose weights are random (benchmark only, predictions meaningless)."""
    jobs = [("bench-densenet121", "densenet121", {"out_channels": 2}, "classification",
             ["control", "MDD"], GM_INPUT)]
    jobs += [(f"bench-dfrn-{f}", "dfrn", {"out_channels": 1}, "regression", [f], T1W_INPUT)
             for f in FACTORS]
    for name, architecture, kwargs, task, outputs, spec in jobs:
        states = []
        for fold in range(folds):
            torch.manual_seed(fold)
            states.append(build_network(architecture, **kwargs).state_dict())
        write_bundle(models / name, {"name": name, "version": "benchmark", "task": task,
                                     "architecture": architecture, "kwargs": kwargs,
                                     "outputs": outputs, "input": spec.to_json(),
                                     "synthetic": True,
                                     "intended_use": "benchmark only: random weights"}, states)


def synthetic_participants(root: Path, n: int) -> Path:
    """Render ``n`` SYNTHETIC participants with MNI-space model inputs under ``root``; return
    the derivatives folder the model step reads."""
    if synth([str(root / "cohort"), "--n-mdd", str(n), "--n-hc", "0", "--seed", "7",
              "--resolution", "3", "--mni-derivatives"]):
        raise SystemExit("could not render the synthetic participants")
    return root / "cohort" / "derivatives" / "bids_mdd-synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=2)
    parser.add_argument("--folds", type=int, default=1, help="fold models per bundle")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        output_dir = synthetic_participants(root, args.participants)
        write_random_bundles(root / "models", args.folds)
        start = time.perf_counter()
        models = load_models([root / "models"], "cpu")
        print(f"loading 6 full-size bundles x {args.folds} fold(s): "
              f"{time.perf_counter() - start:.1f} s, peak RSS {rss_mib() / 1024:.2f} GB")
        subjects = sorted(p.name[4:] for p in output_dir.glob("sub-*"))
        for subject in subjects:
            print(f"sub-{subject} (SYNTHETIC):")
            classifier = models[0]
            image = derivative_path(output_dir, subject=subject, **GM_INPUT.entities)
            x = torch.randn(1, 1, *GM_INPUT.shape).contiguous(
                memory_format=torch.channels_last_3d)
            with torch.inference_mode():
                for attempt in ("first", "second"):
                    start = time.perf_counter()
                    classifier.nets[0](x)
                    print(f"  classifier forward ({attempt}): "
                          f"{time.perf_counter() - start:.2f} s")
            for model in models:
                image = derivative_path(output_dir, subject=subject, **model.spec.entities)
                start = time.perf_counter()
                apply_model(model, image)
                what = ("P(MDD) + saliency" if model.bundle.task == "classification"
                        else f"{model.target} prediction + attention map")
                print(f"  {what}: {time.perf_counter() - start:.2f} s for {len(model.nets)} "
                      f"fold model(s)")
            start = time.perf_counter()
            predict_participant(T1wOutputs(output_dir, {"subject": subject}), models, "cpu")
            print(f"  whole model step (6 models, maps, sidecars, figures, table): "
                  f"{time.perf_counter() - start:.1f} s; peak RSS {rss_mib() / 1024:.2f} GB")


if __name__ == "__main__":
    main()
