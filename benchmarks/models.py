"""Speed of the two 3D networks on this machine, measured against its own matmul peak.

Measures, in one run (machine speed drifts, so only ratios within a run are meaningful):

1. the fp32 matmul peak (GFLOP/s, best of several 4096 x 4096 matmuls, current thread count),
   at the start and again after the inference part (the higher is the reference), and, for
   context, the rate of one large oneDNN convolution (512 -> 512 channels, 3x3x3), which can
   beat the matmul: a network can then exceed 100 % of the matmul peak;
2. inference of DenseNet121-3D (1x1x121x145x121) and DFRN (1x1x182x218x182), eval mode under
   ``torch.inference_mode``: FLOPs as counted by ``torch.utils.flop_counter.FlopCounterMode``
   (a multiply-add counts as 2 FLOPs), best-of-N forward wall time of eager contiguous, eager
   ``channels_last_3d`` and, with ``--compile``, ``torch.compile`` with
   ``torch._inductor.config.freezing = True`` (compile time printed separately; the compiling
   call is that variant's warm-up); achieved GFLOP/s and fraction of the matmul peak. Repeats
   of the variants are interleaved, so drift hits them alike; they stop early (at least one)
   once a time budget is spent, as a DFRN forward takes about a minute. Target (issue): >= 70 %
   of peak; start: 47 % (DenseNet with a stride-2 first convolution, 89.6 GFLOP, 1.95 s eager);
3. training steps (forward + backward + Adam, train mode), batch 2 (batch 1 with ``--quick``),
   each network in a fresh spawned process: the first step (includes one-off allocations) and
   the best later step (later steps only while a time budget lasts), and peak RSS. Peak RSS is
   the process's ``VmHWM`` (Linux): ``ru_maxrss`` survives the fork + exec of a spawned process,
   so it would report the parent's peak (``ru_maxrss`` is the fallback elsewhere);
4. with CUDA only: DenseNet121-3D training samples/s at batch 8, fp16 autocast + GradScaler,
   ``channels_last_3d``, GPU name and peak CUDA memory (skipped on CPU).

Run: ``.venv/bin/python benchmarks/models.py [--quick] [--compile]``. Prints figures; asserts
nothing.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bids_mdd.models.networks import build_network
from memory import rss_mib  # benchmarks/memory.py

#: network name -> (architecture, input spatial shape)
NETWORKS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "DenseNet121-3D": ("densenet121", (121, 145, 121)),
    "DFRN": ("dfrn", (182, 218, 182)),
}
TARGET_FRACTION = 0.70
#: mode -> (matmul repeats, max inference repeats, inference budget s, training batch,
#: max later training steps, training budget s)
MODES = {"quick": (3, 2, 30.0, 1, 2, 60.0), "full": (5, 4, 100.0, 2, 2, 120.0)}


@dataclass
class Timing:
    """Wall times (s) of one inference variant, plus its one-off compile time if any."""

    name: str
    times: list[float]
    compile_s: float | None = None

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def time_call(fn: Callable[[], object]) -> float:
    """Wall time (s) of one call of ``fn``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak(size: int = 4096, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a ``size`` x ``size`` matmul over ``repeats`` timed runs."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def conv_rate(repeats: int = 3) -> float:
    """Best fp32 GFLOP/s of a 512 -> 512 channel 3x3x3 convolution on a 23x28x23 volume."""
    conv = nn.Conv3d(512, 512, 3, padding=1, bias=False).eval()
    x = torch.randn(1, 512, 23, 28, 23)
    flops = 2 * 23 * 28 * 23 * 512 * 512 * 27
    with torch.inference_mode():
        conv(x)  # warm-up
        best = min(time_call(lambda: conv(x)) for _ in range(repeats))
    return flops / best / 1e9


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass as ``FlopCounterMode`` counts them (multiply-add = 2).

    Runs on the meta device (no compute); falls back to a real forward if that fails.
    """
    counter = FlopCounterMode(display=False)
    try:
        meta_model = copy.deepcopy(model).to("meta")
        with torch.inference_mode(), counter:
            meta_model(x.to("meta"))
    except (NotImplementedError, RuntimeError):
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            model(x)
    return counter.get_total_flops()


def inference_variants(model: nn.Module, x: torch.Tensor, compile_: bool,
                       ) -> dict[str, tuple[Callable[[], object], float | None]]:
    """Variant name -> (warmed-up forward closure, compile time in s or None).

    Each closure is called once here (the warm-up; for the compiled variant, the compiling call).
    """
    model.eval()
    variants: dict[str, tuple[Callable[[], object], float | None]] = {}
    cl = torch.channels_last_3d
    model_cl, x_cl = copy.deepcopy(model).to(memory_format=cl), x.to(memory_format=cl)
    for name, net, inp in (("eager contiguous", model, x),
                           ("eager channels_last_3d", model_cl, x_cl)):
        variants[name] = ((lambda net=net, inp=inp: net(inp)), None)
    if compile_:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        compiled = torch.compile(model)
        compile_s = time_call(lambda: compiled(x))
        variants["compile (freezing)"] = ((lambda: compiled(x)), compile_s)
    for fn, compile_s in variants.values():
        if compile_s is None:  # the compiled variant already ran while compiling
            fn()
    return variants


def bench_inference(name: str, repeats: int, budget_s: float, compile_: bool,
                    ) -> tuple[int, list[Timing]]:
    """FLOPs and per-variant timings of ``name``'s forward pass.

    Rounds (one call of each variant) are interleaved; up to ``repeats`` rounds, no new round
    once ``budget_s`` seconds of rounds are spent (at least one round).
    """
    architecture, shape = NETWORKS[name]
    torch.manual_seed(0)
    model = build_network(architecture).eval()
    x = torch.randn(1, 1, *shape)
    flops = count_flops(model, x)
    with torch.inference_mode():
        variants = inference_variants(model, x, compile_)
        timings = {v: Timing(v, [], c) for v, (_, c) in variants.items()}
        start = time.perf_counter()
        for _ in range(repeats):
            for v, (fn, _) in variants.items():
                timings[v].times.append(time_call(fn))
            if time.perf_counter() - start > budget_s:
                break
    return flops, list(timings.values())


def training_step_worker(architecture: str, shape: tuple[int, int, int], batch: int,
                         steps: int, budget_s: float, threads: int) -> dict[str, object]:
    """In a fresh process: a first Adam step, then up to ``steps`` more while the steps so far
    took less than ``budget_s`` seconds; step times and RSS (MiB)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_network(architecture).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, *shape)
    rss_before = rss_mib("VmRSS")

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        out = model(x)
        if out.shape[1] == 1:  # regression (DFRN)
            loss = nn.functional.mse_loss(out.squeeze(1), torch.zeros(batch))
        else:  # classification (DenseNet)
            loss = nn.functional.cross_entropy(out, torch.zeros(batch, dtype=torch.long))
        loss.backward()
        optimiser.step()

    first = time_call(step)
    later: list[float] = []
    while len(later) < steps and first + sum(later) < budget_s:
        later.append(time_call(step))
    return {"first_s": first, "later_s": later, "rss_before_mib": rss_before,
            "peak_rss_mib": rss_mib("VmHWM")}


def bench_training(name: str, batch: int, steps: int, budget_s: float) -> dict[str, object]:
    """Run :func:`training_step_worker` for ``name`` in a spawned subprocess."""
    architecture, shape = NETWORKS[name]
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(training_step_worker, (architecture, shape, batch, steps, budget_s,
                                                 torch.get_num_threads()))


def bench_cuda_training(batch: int = 8, warmup: int = 3, steps: int = 10) -> None:
    """DenseNet121-3D training samples/s on CUDA, fp16 autocast + GradScaler, channels_last_3d."""
    device = torch.device("cuda")
    architecture, shape = NETWORKS["DenseNet121-3D"]
    torch.manual_seed(0)
    cl = torch.channels_last_3d
    model = build_network(architecture).to(device).to(memory_format=cl).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(batch, 1, *shape, device=device).to(memory_format=cl)
    y = torch.randint(0, 2, (batch,), device=device)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"GPU: {torch.cuda.get_device_name(device)}")
    print(f"DenseNet121-3D train, batch {batch}, fp16 autocast + channels_last_3d: "
          f"{steps * batch / seconds:.1f} samples/s ({seconds / steps * 1000:.0f} ms/step), "
          f"peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")


def print_inference(name: str, flops: int, timings: list[Timing], peak: float) -> None:
    """Table rows of one network's inference variants."""
    _, shape = NETWORKS[name]
    print(f"\n{name}, input 1x1x{'x'.join(map(str, shape))}: {flops / 1e9:.1f} GFLOP per "
          "forward (FlopCounterMode, multiply-add = 2 FLOPs)")
    print(f"  {'variant':24s} {'n':>2s} {'best s':>8s} {'median s':>9s} {'GFLOP/s':>8s} "
          f"{'% peak':>7s} {'compile s':>10s}")
    for t in timings:
        rate = flops / t.best / 1e9
        compile_s = f"{t.compile_s:10.1f}" if t.compile_s is not None else f"{'-':>10s}"
        print(f"  {t.name:24s} {len(t.times):2d} {t.best:8.3f} {t.median:9.3f} {rate:8.1f} "
              f"{100 * rate / peak:6.1f}% {compile_s}")
    best = min(timings, key=lambda t: t.best)
    print(f"  fastest: {best.name} ({100 * flops / best.best / 1e9 / peak:.0f} % of peak; "
          f"target >= {100 * TARGET_FRACTION:.0f} %)")


def print_training(name: str, r: dict[str, object]) -> None:
    """Table row of one network's training steps."""
    later = r["later_s"]
    best = f"{min(later):10.2f}" if later else f"{'-':>10s}"
    print(f"  {name:16s} {r['first_s']:12.2f} {best} {len(later):7d} "
          f"{r['rss_before_mib']:15.0f} {r['peak_rss_mib']:13.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer repeats, smaller time budgets, training batch 1")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile with inductor freezing (takes minutes)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    mm_repeats, repeats, budget, batch, steps, train_budget = MODES[mode]
    threads = torch.get_num_threads()
    total = time.perf_counter()
    print(f"torch {torch.__version__}, {threads} threads, {mode} mode, "
          f"compile {'on' if args.compile else 'off'}")

    print(f"\n1. fp32 matmul peak (4096^2, best of {mm_repeats}, {threads} threads)")
    peak_start = matmul_peak(repeats=mm_repeats)
    print(f"  at start: {peak_start:.1f} GFLOP/s")
    print(f"  for context, conv3d 512->512 3x3x3 on 23x28x23: {conv_rate():.1f} GFLOP/s")

    print(f"\n2. Inference (eval, inference_mode), 1 warm-up, then best of up to {repeats} "
          f"interleaved rounds (no new round after {budget:.0f} s)")
    results = {name: bench_inference(name, repeats, budget, args.compile) for name in NETWORKS}
    peak_end = matmul_peak(repeats=mm_repeats)
    peak = max(peak_start, peak_end)
    print(f"  matmul peak re-measured after inference: {peak_end:.1f} GFLOP/s; "
          f"% peak uses the higher, {peak:.1f} GFLOP/s")
    for name, (flops, timings) in results.items():
        print_inference(name, flops, timings, peak)

    print(f"\n3. Training step (train mode, forward + backward + Adam), batch {batch}, fresh "
          f"process each; up to {steps} later steps while the steps took < {train_budget:.0f} s")
    print(f"  {'network':16s} {'first step s':>12s} {'best later':>10s} {'n later':>7s} "
          f"{'RSS before MiB':>15s} {'peak RSS MiB':>13s}")
    for name in NETWORKS:
        print_training(name, bench_training(name, batch, steps, train_budget))

    print("\n4. CUDA training")
    if torch.cuda.is_available():
        bench_cuda_training()
    else:
        print("  skipped: torch.cuda.is_available() is False")
    print(f"\ntotal wall time {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
