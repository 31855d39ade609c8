"""The participant level's model step at full size against this machine's FLOP floor.

Builds six five-fold full-size bundles with random weights (benchmark only: their predictions
mean nothing): DenseNet121-3D on the 121 x 145 x 121 GM grid and one DFRN per symptom factor on
the 182 x 218 x 182 T1w grid, as ``benchmarks/inference.py`` does. Renders SYNTHETIC participants
in MNI space, loads the models once and applies them the way the participant level does
(:func:`predict_participants`: every attention map, sidecar and figure, the predictions table),
``--batch-size`` participants per call (one by default), and prints per participant:

- the whole step's wall time;
- the FLOPs it must compute: per fold model one forward and one input-gradient backward pass
  (``torch.utils.flop_counter.FlopCounterMode`` on the meta device; multiply-add = 2 FLOPs;
  no weight gradients);
- the fp32 matmul peak (``benchmarks/models.py``) measured in the same run: at the start, just
  before and just after each step, and at the end (the highest is the reference: drift and the
  other users of the machine only lower it);
- how much of the step the fold models' forward + backward passes take (the rest: reading,
  normalising, writing maps, sidecars and figures);
- the floor = FLOPs / peak and the ratio step / floor (requirement: <= 1.5).

``--before`` also times the previous attention code path (module backward hooks for the guided
ReLUs, autograd's own input-convolution backward: :func:`legacy_input_gradient`) on the same
models and participants, interleaved per participant (in turn first and last) so drift hits
both alike.
``--heap default`` times the step with glibc's default allocation instead (large freed blocks
unmapped and faulted in again: the step without :func:`bids_mdd.models.heap.retained_heap`),
``--heap both`` both, the default first (once retained_heap has run, glibc no longer adjusts
its mmap threshold, so only a process's first step sees glibc as it starts). Each step's
resident memory at its start and its peak are printed too (the process's high-water mark,
reset before each step); compare peaks of separate runs, one ``--heap`` each.

Run: ``.venv/bin/python benchmarks/model_step.py [--participants 1] [--folds 5] [--batch-size 1]
[--before] [--heap retained|default|both]``.
Prints figures; asserts nothing. Only figures of one run compare (this machine's speed drifts).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from unittest import mock

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import bids_mdd.models.inference as model_inference
import bids_mdd.participant.predictions as model_step
from bids_mdd.bids.outputs import T1wOutputs
from bids_mdd.models.inference import LoadedModel, _score, load_models
from bids_mdd.participant.predictions import ModelStepSettings, predict_participants
from inference import synthetic_participants, write_random_bundles  # (sets TEMPLATEFLOW_HOME)
from memory import rss_mib
from models import matmul_peak  # benchmarks/models.py


def _clamp_gradient(module: nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
    return tuple(None if g is None else g.clamp(min=0) for g in grad_input)


def legacy_input_gradient(net: nn.Module, x: torch.Tensor,
                          score: Callable[[torch.Tensor], torch.Tensor],
                          transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                          guided: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The previous ``input_gradient``: a full backward hook clamping each ReLU's input
    gradient, autograd's own backward of every convolution (kept here for the comparison)."""
    leaf = x.detach().requires_grad_(True)
    net.eval()
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)] if guided else []
    handles = [m.register_full_backward_hook(_clamp_gradient) for m in relus]
    try:
        with torch.enable_grad():
            out = net(transform(leaf) if transform is not None else leaf)
            (grad,) = torch.autograd.grad(score(out).sum(), leaf)
    finally:
        for handle in handles:
            handle.remove()
    return out.detach(), grad


def legacy_path() -> AbstractContextManager:
    """Within the block the model step computes its maps with :func:`legacy_input_gradient`."""
    return mock.patch.object(model_inference, "input_gradient", legacy_input_gradient)


def default_heap() -> AbstractContextManager:
    """Within the block the model step leaves glibc's allocation as it is."""
    return mock.patch.object(model_step, "retained_heap", nullcontext)


def reset_peak_memory() -> None:
    """Reset this process's resident high-water mark (VmHWM) to its current size (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


@contextmanager
def timed_networks(seconds: list[float]) -> Iterator[None]:
    """Within the block, the wall time of each fold model's forward + backward pass (one
    ``input_gradient`` call of the model step) is appended to ``seconds``: the step's time
    outside them is reading, normalising, writing maps and figures."""
    current = model_inference.input_gradient

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return current(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    model_inference.input_gradient = timed
    try:
        yield
    finally:
        model_inference.input_gradient = current


def _forward_backward(net: nn.Module, x: torch.Tensor, task: str) -> None:
    """One forward and one backward pass to the input only (the networks' parameters do not
    require gradients). ``.backward()``, not ``autograd.grad``: FlopCounterMode's module
    tracker refuses the latter with a leaf input."""
    leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        _score(task)(net(leaf)).sum().backward()


def fold_flops(model: LoadedModel) -> int:
    """FLOPs of one fold model's forward + input-gradient backward on one participant.

    Counted on the meta device (no compute) with the plain gradient: guidance changes values,
    not operations. Falls back to a real pass when the meta device cannot run it.
    """
    x = torch.zeros(1, 1, *model.spec.shape)
    net = model.nets[0]
    assert not any(p.requires_grad for p in net.parameters())  # no weight gradient counted
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            _forward_backward(copy.deepcopy(net).to("meta"), x.to("meta"), model.bundle.task)
    except (NotImplementedError, RuntimeError):
        counter = FlopCounterMode(display=False)
        with counter:
            _forward_backward(net, x, model.bundle.task)
    return counter.get_total_flops()


def step_seconds(output_dir: Path, subjects: list[str], models: list[LoadedModel],
                 legacy: bool, heap: bool) -> tuple[float, float]:
    """Wall time of the participant level's whole model step for ``subjects`` in one batch
    (one forward + backward pass per fold model for all of them), and the part of it spent in
    the fold models' forward + backward passes. ``legacy``: the previous attention code;
    ``heap``: freed memory retained (False: glibc's default)."""
    settings = ModelStepSettings(device="cpu", threads=torch.get_num_threads(),
                                 batch_size=len(subjects))
    networks: list[float] = []
    start = time.perf_counter()
    with (legacy_path() if legacy else nullcontext(), nullcontext() if heap else default_heap(),
          timed_networks(networks)):
        outcomes = predict_participants([T1wOutputs(output_dir, {"subject": subject})
                                         for subject in subjects], models, settings)
    seconds = time.perf_counter() - start
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise outcome
    return seconds, sum(networks)


def print_floor(flops: int, peak: float, seconds: dict[str, list[float]]) -> None:
    """The floor's arithmetic and each path's per-participant ratio to it."""
    floor = flops / (peak * 1e9)
    print(f"\nfloor = FLOPs / peak = {flops / 1e12:.3f} TFLOP / {peak:.1f} GFLOP/s = "
          f"{flops / 1e9:.0f} / {peak:.1f} s = {floor:.1f} s per participant")
    for name, times in seconds.items():
        ratios = ", ".join(f"{t:.1f} s / {floor:.1f} s = {t / floor:.2f}x" for t in times)
        print(f"  {name:12s} step / floor: {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=1)
    parser.add_argument("--folds", type=int, default=5, help="fold models per bundle")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="participants per forward pass (the participant level's "
                             "--batch-size); figures are per participant")
    parser.add_argument("--before", action="store_true",
                        help="also time the previous attention code path (side by side)")
    parser.add_argument("--heap", choices=("retained", "default", "both"), default="retained",
                        help="the step's allocation: freed memory retained (the participant "
                             "level's), glibc's default, or both side by side")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, {os.cpu_count()} CPUs; "
          f"{args.participants} participant(s), 6 bundles x {args.folds} folds (random weights, "
          "benchmark only)")
    peak_start = matmul_peak()
    print(f"fp32 matmul peak at start: {peak_start:.1f} GFLOP/s (4096^2, best of 5)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        output_dir = synthetic_participants(root, args.participants)
        write_random_bundles(root / "models", args.folds)
        models = load_models([root / "models"], "cpu")
        flops = 0
        for model in models:
            per_fold = fold_flops(model)
            flops += per_fold * len(model.nets)
            print(f"  {model.bundle.name}: {len(model.nets)} folds x {per_fold / 1e9:.1f} GFLOP "
                  "(forward + input-gradient backward)")
        print(f"FLOPs per participant: {flops / 1e12:.3f} TFLOP")
        paths = {"retained": ["after"], "default": ["default heap"],
                 "both": ["default heap", "after"]}[args.heap]  # (see the docstring's order)
        paths = (["before"] if args.before else []) + paths
        seconds: dict[str, list[float]] = {name: [] for name in paths}
        peaks = [peak_start]
        subjects = sorted(p.name[4:] for p in output_dir.glob("sub-*"))
        batches = [subjects[i:i + args.batch_size]
                   for i in range(0, len(subjects), args.batch_size)]
        for number, batch in enumerate(batches):
            for name in paths if number % 2 == 0 else paths[::-1]:  # (drift hits all alike)
                peaks.append(matmul_peak(repeats=3))
                reset_peak_memory()
                start_gb = rss_mib("VmRSS") / 1024
                step, networks = step_seconds(output_dir, batch, models, name == "before",
                                              name != "default heap")
                peak_gb = rss_mib() / 1024
                step, networks = step / len(batch), networks / len(batch)
                seconds[name].append(step)
                peaks.append(matmul_peak(repeats=3))
                print(f"sub-{', sub-'.join(batch)} (SYNTHETIC), {name}: whole model step "
                      f"{step:.1f} s per participant, of which the {len(models)} x "
                      f"{args.folds} fold models' forward + backward passes {networks:.1f} s; "
                      f"matmul peak just before {peaks[-2]:.1f}, just after {peaks[-1]:.1f} "
                      f"GFLOP/s; resident memory at the start {start_gb:.2f} GB, peak "
                      f"{peak_gb:.2f} GB",
                      flush=True)
    peaks.append(matmul_peak())
    peak = max(peaks)
    print(f"fp32 matmul peak at end: {peaks[-1]:.1f} GFLOP/s; reference: the highest measured "
          f"in this run, {peak:.1f} GFLOP/s")
    print_floor(flops, peak, seconds)


if __name__ == "__main__":
    main()
