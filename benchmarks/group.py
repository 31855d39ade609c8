"""Wall time and peak memory of the streamed group GLM against nilearn's SecondLevelModel, on
N SYNTHETIC GM maps at 121 x 145 x 121 (1.5 mm, the classifier grid).

The maps are SYNTHETIC (no real participant): a smooth GM template inside the
MNI152NLin2009cAsym brain mask (26 % of the grid, zero outside; needs TEMPLATEFLOW_HOME), scaled
per subject by a combination of 8 smooth random fields, an age slope and iid noise, with 2 %
less GM in a block for the MDD half. They are written once as float32 ``.nii.gz`` (about 2 MB
each) to a temporary folder (deleted at the end; ``--data-dir`` keeps and reuses them), after a
check of the free disk space.

Measured, each in a fresh spawned process (so its peak memory is its own; peak = ``VmHWM`` from
/proc/self/status, which, unlike ``ru_maxrss``, does not inherit the parent's peak):

1. ours: :func:`bids_mdd.group.glm.fit_glm` with ``min_mean=0.2`` (GM ~ intercept + MDD +
   age + sex over :func:`bids_mdd.group.glm.search_region` (the template brain dilated by
   6 mm), chunks of ``--chunk-size`` maps, the GM mask = mean GM >= 0.2 found in the same
   pass, as the group level runs it): wall time (each map is read once;
   reading a .nii.gz, mostly zlib, is most of it) and peak memory. Targets (issue): < 60 s
   and < 4 GB for N = 1000.
2. nilearn ``SecondLevelModel(mask_img=<our mask>)`` ``.fit`` + ``.compute_contrast`` (t) on the
   same maps and design: wall time and peak memory, the ratios to ours, and the largest t
   difference between the two (the same OLS, so it should be ~1e-6, float32 inputs). nilearn
   holds every map in memory; its process runs under an address-space limit
   (``--nilearn-limit-gib``, default 80 % of RAM) so that it fails with MemoryError instead of
   being OOM-killed, and a child killed anyway is reported, not waited on. When it fails at N,
   both run again on the first ``--compare-n`` maps, for a ratio where nilearn fits.

The files were just written, so they are read from the page cache when they fit in memory;
reads from a cold disk are slower. Note that nilearn loads every map at once (about
N x 2.1 M voxels x 4 bytes, 8.5 GB for N = 1000, plus copies): ``--no-nilearn`` skips it.

Run: ``.venv/bin/python benchmarks/group.py [--n 1000] [--chunk-size 50] [--data-dir DIR]
[--no-nilearn] [--compare-n 200]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from bids_mdd.group.glm import contrast_vector, design_matrix, fit_glm, search_region
from bids_mdd.spaces.grids import CLASSIFIER_GRID
from memory import rss_mib  # benchmarks/memory.py

TARGET_S, TARGET_GIB = 60.0, 4.0
N_FIELDS = 8
#: bumped when the synthetic maps change, so that a reused --data-dir is regenerated
DATA_VERSION = 2


def participants(n: int, seed: int) -> pd.DataFrame:
    """SYNTHETIC participants: half MDD, age 20-70, sex F/M."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"participant_id": [f"sub-{i:04d}" for i in range(n)],
                         "mdd": (np.arange(n) % 2).astype(int),
                         "age": rng.uniform(20, 70, n).round(1),
                         "sex": rng.choice(["F", "M"], n)})


def write_synthetic_maps(folder: Path, table: pd.DataFrame, seed: int) -> list[Path]:
    """Write the SYNTHETIC GM maps of ``table``'s participants (see the module docstring)."""
    rng = np.random.default_rng(seed)
    shape = CLASSIFIER_GRID.shape
    brain = search_region(CLASSIFIER_GRID, dilate_mm=0.0)  # the template's brain mask

    def smooth_field(sigma: float) -> np.ndarray:
        field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
        return (field / field[brain].std()).astype(np.float32)

    template = np.where(brain, np.clip(0.45 + 0.2 * smooth_field(4.0), 0.0, 1.0), 0.0)
    template = template.astype(np.float32)
    fields = [smooth_field(3.0) for _ in range(N_FIELDS)]
    block = np.zeros(shape, bool)
    block[50:70, 60:85, 50:70] = True
    paths = []
    for row in table.itertuples():
        weights = rng.standard_normal(N_FIELDS) * 0.08 / np.sqrt(N_FIELDS)
        scale = 1.0 - 0.003 * (row.age - 45) + sum(w * f for w, f in zip(weights, fields))
        gm = template * scale + 0.02 * rng.standard_normal(shape, dtype=np.float32)
        gm[block] -= 0.02 * row.mdd
        gm = np.where(brain, np.clip(gm, 0.0, 1.0), 0.0).astype(np.float32)
        path = folder / f"{row.participant_id}_res-1p5_desc-SYNTHETIC_GM.nii.gz"
        nib.save(CLASSIFIER_GRID.image(gm), path)
        paths.append(path)
        if len(paths) == 1:
            check_disk(folder, path.stat().st_size, len(table))
    return paths


def check_disk(folder: Path, bytes_per_map: int, n: int) -> None:
    """SystemExit when ``n`` maps of ``bytes_per_map`` would not fit with 2 GB to spare."""
    need = bytes_per_map * n
    free = shutil.disk_usage(folder).free
    print(f"  {bytes_per_map / 1e6:.1f} MB per map, {need / 1e9:.1f} GB for {n} maps; "
          f"{free / 1e9:.0f} GB free in {folder}", flush=True)
    if need + 2e9 > free:
        raise SystemExit(f"not enough disk space in {folder} for {n} maps; use a smaller --n "
                         "or another --data-dir")


def prepare_data(folder: Path, n: int, seed: int) -> tuple[list[Path], pd.DataFrame]:
    """The maps and table in ``folder``: reused when its manifest matches, else (re)written."""
    manifest = folder / "manifest.json"
    wanted = {"n": n, "seed": seed, "version": DATA_VERSION}
    table = participants(n, seed)
    if manifest.is_file() and json.loads(manifest.read_text()) == wanted:
        paths = sorted(folder.glob("sub-*_GM.nii.gz"))
        if len(paths) == n:
            print(f"reusing {n} SYNTHETIC maps in {folder}")
            return paths, table
    folder.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)
    for old in folder.glob("sub-*_GM.nii.gz"):
        old.unlink()
    print(f"writing {n} SYNTHETIC GM maps to {folder}", flush=True)
    start = time.perf_counter()
    paths = write_synthetic_maps(folder, table, seed)
    manifest.write_text(json.dumps(wanted))
    print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
    return paths, table


def ours_worker(paths: list[Path], design: np.ndarray, contrast: np.ndarray,
                chunk_size: int) -> dict[str, object]:
    """In a fresh process: the one-pass fit_glm; time (s), RSS (MiB), the mask and t."""
    rss_before = rss_mib("VmRSS")
    start = time.perf_counter()
    result = fit_glm(paths, design, search_region(), contrast, chunk_size=chunk_size,
                     min_mean=0.2)
    fit_s = time.perf_counter() - start
    return {"fit_s": fit_s, "rss_before_mib": rss_before, "peak_mib": rss_mib("VmHWM"),
            "mask": result.mask, "t": result.t}


def nilearn_worker(paths: list[Path], design: pd.DataFrame, contrast: np.ndarray,
                   mask_path: Path, limit_gib: float) -> dict[str, object]:
    """In a fresh process, its address space limited to ``limit_gib``: nilearn
    SecondLevelModel fit + t contrast; times, RSS and t."""
    from nilearn.glm.second_level import SecondLevelModel

    limit = int(limit_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rss_before = rss_mib("VmRSS")
    start = time.perf_counter()
    model = SecondLevelModel(mask_img=str(mask_path), minimize_memory=True)
    model.fit([str(p) for p in paths], design_matrix=design)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    t_img = model.compute_contrast(contrast, second_level_stat_type="t", output_type="stat")
    contrast_s = time.perf_counter() - start
    mask = np.asarray(nib.load(mask_path).dataobj).astype(bool)
    return {"fit_s": fit_s, "contrast_s": contrast_s, "rss_before_mib": rss_before,
            "peak_mib": rss_mib("VmHWM"),
            "t": np.asarray(t_img.dataobj, dtype=np.float64)[mask]}


def in_fresh_process(function, *args) -> dict[str, object]:
    """``function(*args)`` in a spawned process of its own; {"error": ...} when it raises
    MemoryError or dies (e.g. killed by the kernel's OOM killer)."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        try:
            return pool.submit(function, *args).result()
        except MemoryError as error:
            return {"error": f"MemoryError ({error or 'allocation refused'})"}
        except BrokenProcessPool:
            return {"error": "the process died (killed, e.g. by the OOM killer)"}


def total_ram_gib() -> float:
    """Physical memory, in GiB."""
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30


def compare(paths: list[Path], table: pd.DataFrame, folder: Path, chunk_size: int,
            limit_gib: float | None) -> bool:
    """Run ours (and nilearn unless ``limit_gib`` is None) on ``paths``; print the figures.
    Returns whether nilearn ran to the end."""
    n = len(paths)
    design, names = design_matrix(table.iloc[:n], "mdd", ["age", "sex"])
    contrast = contrast_vector(names, "mdd")
    ours = in_fresh_process(ours_worker, paths, design, contrast, chunk_size)
    if "error" in ours:
        raise SystemExit(f"ours failed at N = {n}: {ours['error']}")
    mask = ours["mask"]
    print(f"\nN = {n}\n{'':30s} {'wall s':>8s} {'peak MiB':>9s} {'RSS before':>11s}")
    print(f"{'ours: fit_glm (one pass)':30s} {ours['fit_s']:8.1f} {ours['peak_mib']:9.0f} "
          f"{ours['rss_before_mib']:11.0f}   ({1000 * ours['fit_s'] / n:.0f} ms per map)")
    print(f"  mask: {int(mask.sum())} voxels; chunk size {chunk_size}; targets "
          f"< {TARGET_S:.0f} s ({'met' if ours['fit_s'] < TARGET_S else 'MISSED'}) and "
          f"< {TARGET_GIB:.0f} GiB ("
          f"{'met' if ours['peak_mib'] < TARGET_GIB * 1024 else 'MISSED'}) (targets for N = 1000)")
    if limit_gib is None:
        return True
    mask_path = folder / f"mask_n{n}.nii.gz"
    nib.save(CLASSIFIER_GRID.image(mask, dtype=np.uint8), mask_path)
    frame = pd.DataFrame(design, columns=names)
    start = time.perf_counter()
    theirs = in_fresh_process(nilearn_worker, paths, frame, contrast, mask_path, limit_gib)
    if "error" in theirs:
        print(f"{'nilearn: SecondLevelModel':30s} FAILED after "
              f"{time.perf_counter() - start:.0f} s under a {limit_gib:.1f} GiB address-space "
              f"limit: {theirs['error']}")
        return False
    theirs_s = theirs["fit_s"] + theirs["contrast_s"]
    print(f"{'nilearn: fit':30s} {theirs['fit_s']:8.1f}")
    print(f"{'nilearn: compute_contrast':30s} {theirs['contrast_s']:8.1f}")
    print(f"{'nilearn: total':30s} {theirs_s:8.1f} {theirs['peak_mib']:9.0f} "
          f"{theirs['rss_before_mib']:11.0f}")
    print(f"  nilearn / ours: time x{theirs_s / ours['fit_s']:.2f}, peak memory "
          f"x{theirs['peak_mib'] / ours['peak_mib']:.2f}")
    difference = np.abs(theirs["t"] - ours["t"])
    print(f"  t agreement: max |difference| {difference.max():.2e} (|t| up to "
          f"{np.abs(ours['t']).max():.1f}), median {np.median(difference):.2e}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="number of SYNTHETIC maps")
    parser.add_argument("--chunk-size", type=int, default=50, help="fit_glm's chunk size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path,
                        help="keep the maps here and reuse them (default: a deleted temp dir)")
    parser.add_argument("--no-nilearn", action="store_true", help="skip SecondLevelModel")
    parser.add_argument("--nilearn-limit-gib", type=float, default=None,
                        help="address-space limit of nilearn's process (default: 80%% of RAM)")
    parser.add_argument("--compare-n", type=int, default=200,
                        help="when nilearn fails at N, compare both on this many maps")
    args = parser.parse_args()
    print(f"group GLM benchmark: N = {args.n} SYNTHETIC maps on {CLASSIFIER_GRID.shape}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    limit = None if args.no_nilearn else (args.nilearn_limit_gib or 0.8 * total_ram_gib())
    folder = args.data_dir or Path(tempfile.mkdtemp(prefix="bids_mdd_group_bench_"))
    try:
        paths, table = prepare_data(folder, args.n, args.seed)
        if not compare(paths, table, folder, args.chunk_size, limit) and args.compare_n < args.n:
            print(f"\nnilearn did not fit at N = {args.n}: both again on the first "
                  f"{args.compare_n} maps")
            compare(paths[:args.compare_n], table, folder, args.chunk_size, limit)
    finally:
        if args.data_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
