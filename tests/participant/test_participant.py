"""The participant package: resources from the allocation, the graph for every option, the
packages' import direction, deterministic mode (byte-identical derivatives across --nprocs), and
crash and resume (SIGKILL at five points, then byte-identical outputs)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from bids_mdd.bids.discovery import T1wInput
from bids_mdd.bids.names import in_progress_path
from bids_mdd.cli.run import main
from bids_mdd.participant import resources
from bids_mdd.participant.background import AfterPreprocessing
from bids_mdd.participant.resources import available_cpus, available_mem_gb, plan_resources
from bids_mdd.participant.scheduler import (
    DepthFirstMultiProcPlugin,
    nipype_runner,
    rank_by_workflow,
)
from bids_mdd.preproc.ants_steps import (
    PreprocSettings,
    RegistrationSettings,
    SegmentationSettings,
    settings_from_json,
)
from bids_mdd.preproc.workflow import PreprocOptions, init_bids_mdd_wf
from bids_mdd.synth.cohort import generate_cohort
from bids_mdd.synth.model import CohortSpec
from conftest import CRASH_AT

# --- resources ---------------------------------------------------------------------------------

def test_cpus_follow_affinity_slurm_and_quota(monkeypatch, tmp_path) -> None:
    cgroup_cpus = resources._cgroup_cpus
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(resources, "_cgroup_cpus", lambda: None)
    assert available_cpus({}) == 4
    assert available_cpus({"SLURM_CPUS_PER_TASK": "2"}) == 2
    assert available_cpus({"SLURM_CPUS_ON_NODE": "3"}) == 3
    assert available_cpus({"SLURM_CPUS_PER_TASK": "16"}) == 4  # the affinity mask is smaller
    assert available_cpus({"SLURM_CPUS_PER_TASK": "two"}) == 4
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert cgroup_cpus(str(quota)) == 2  # docker --cpus 1.5
    quota.write_text("max 100000\n")
    assert cgroup_cpus(str(quota)) is None


def test_memory_from_slurm() -> None:
    assert available_mem_gb({"SLURM_MEM_PER_NODE": "8192"}) == 8.0
    assert available_mem_gb({"SLURM_MEM_PER_CPU": "2048", "SLURM_CPUS_PER_TASK": "4"}) == 8.0
    assert available_mem_gb({}) is None


def test_plan_resources(monkeypatch) -> None:
    common = {"mem_gb": None, "deterministic": False, "model_batch_size": None, "device": "cpu",
              "environ": {}}
    many = plan_resources(nprocs=2, omp_nthreads=None, n_inputs=8, **common)
    assert (many.nprocs, many.omp_nthreads, many.model_threads, many.model_batch_size) == (
        2, 1, 2, 1)
    one = plan_resources(nprocs=16, omp_nthreads=None, n_inputs=1, **common)
    assert (one.nprocs, one.omp_nthreads) == (16, 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    with resources.thread_environment(one) as values:
        assert values == {name: "8" for name in resources.THREAD_VARIABLES}
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "8"
    assert os.environ["OMP_NUM_THREADS"] == "1" and "MKL_NUM_THREADS" not in os.environ
    asked = plan_resources(nprocs=2, omp_nthreads=4, n_inputs=1, **common)
    assert asked.omp_nthreads == 2  # never more threads per node than processes
    cuda = plan_resources(nprocs=4, omp_nthreads=None, n_inputs=2, **{**common, "device": "cuda"})
    assert cuda.model_batch_size == 4
    fixed = plan_resources(nprocs=4, omp_nthreads=4, n_inputs=1,
                           **{**common, "deterministic": True, "model_batch_size": 8})
    assert (fixed.nprocs, fixed.omp_nthreads, fixed.model_threads, fixed.model_batch_size) == (
        4, 1, 1, 1)
    # the model step keeps 3 GB of --mem-gb on the CPU, none on a GPU or without models
    bounded = plan_resources(nprocs=2, omp_nthreads=None, n_inputs=3, **{**common, "mem_gb": 10})
    assert (bounded.mem_gb, bounded.model_mem_gb) == (7.0, 3.0)
    assert "7 GB (+ 3 GB kept for the model step)" in bounded.describe()
    assert plan_resources(nprocs=2, omp_nthreads=None, n_inputs=3, applies_models=False,
                          **{**common, "mem_gb": 10}).mem_gb == 10.0
    assert plan_resources(nprocs=2, omp_nthreads=None, n_inputs=3,
                          **{**common, "mem_gb": 10, "device": "cuda"}).mem_gb == 10.0
    assert plan_resources(nprocs=2, omp_nthreads=None, n_inputs=3,
                          **{**common, "environ": {"SLURM_MEM_PER_NODE": "16384"}}).mem_gb == 13.0
    runner = nipype_runner(plan_resources(nprocs=2, omp_nthreads=None, n_inputs=3,
                                          **{**common, "mem_gb": 4.0}), ["a", "b"], print)
    assert (runner.processors, runner.memory_gb) == (2, 3.0)  # never below the largest node
    runner.pool.shutdown()


def test_ready_steps_go_to_the_first_participant_first() -> None:
    """nipype's topological order has every participant's first step before any second step;
    the depth-first scheduler takes the earliest participant's ready step first."""
    runner = DepthFirstMultiProcPlugin(plugin_args={"n_procs": 1},
                                       rank_of=rank_by_workflow(["anat_b", "anat_a"]))
    runner.procs = [SimpleNamespace(fullname=name) for name in (
        "wf.anat_a.validate", "wf.anat_b.validate", "wf.anat_a.n4", "wf.anat_b.n4", "wf.other")]
    assert runner._sort_jobs([0, 1, 2, 3, 4]) == [1, 3, 0, 2, 4]
    runner.pool.shutdown()


def test_after_preprocessing_batches_in_order_and_raises_in_the_caller() -> None:
    seen = []
    with AfterPreprocessing(lambda batch: seen.append([t.subject for t in batch]) or [],
                            batch_size=2) as after:
        for label in "abc":
            after.submit(T1wInput(Path(label), label))
    assert [label for batch in seen for label in batch] == ["a", "b", "c"]
    assert all(1 <= len(batch) <= 2 for batch in seen)

    def full_disk(batch):
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        with AfterPreprocessing(full_disk) as after:
            after.submit(T1wInput(Path("a"), "a"))


# --- the graph ---------------------------------------------------------------------------------

def _t1ws(root: Path) -> list[T1wInput]:
    paths = [root / "sub-01_T1w.nii.gz", root / "sub-02_ses-1_T1w.nii.gz"]
    for path in paths:
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), path)
    return [T1wInput(paths[0], "01"), T1wInput(paths[1], "02", "1")]


@pytest.mark.parametrize("skull_strip,segmentation,sloppy,deterministic", list(itertools.product(
    ("auto", "force", "skip"), ("priors", "kmeans"), (False, True), (False, True))))
def test_graph_builds_for_every_option(templateflow_home, tmp_path, skull_strip, segmentation,
                                       sloppy, deterministic) -> None:
    options = PreprocOptions(skull_strip=skull_strip, segmentation=segmentation, sloppy=sloppy,
                             deterministic=deterministic, omp_nthreads=3)
    workflow = init_bids_mdd_wf(t1ws=_t1ws(tmp_path), bids_dir=tmp_path,
                                output_dir=tmp_path / "out", options=options)
    graph = workflow._create_flat_graph()
    names = sorted(node.fullname for node in graph.nodes())
    assert len(names) == 20 and len(set(names)) == 20
    assert {name.split(".")[1] for name in names} == {"anat_preproc_subject01",
                                                      "anat_preproc_subject02_session1"}
    register = workflow.get_node("anat_preproc_subject01.register")
    assert register.n_procs == 3 and register.inputs.num_threads == 3
    n4 = workflow.get_node("anat_preproc_subject01.n4")
    assert n4.inputs.field_mm == (4.0 if sloppy else 2.0)
    uses_inverse = any(target.fullname.endswith("subject01.segment")
                       and ("inverse", "inverse") in data["connect"]
                       for _, target, data in graph.edges(data=True))
    assert uses_inverse is (segmentation == "priors")
    parameters = json.loads(workflow.get_node("anat_preproc_subject01.derivatives")
                            .inputs.parameters)
    # the nodes run with the settings the sidecars describe
    for step, kind, key in (("register", RegistrationSettings, "Registration"),
                            ("segment", SegmentationSettings, "Segmentation")):
        settings = settings_from_json(kind, workflow.get_node(
            f"anat_preproc_subject01.{step}").inputs.settings)
        assert settings.describe() == parameters[key]
    assert parameters["BiasCorrection"] == f"antspyx N4, field fitted at {n4.inputs.field_mm:g} mm"
    assert parameters["Segmentation"]["iterations"] == (2 if sloppy else
                                                        3 if segmentation == "priors" else 5)
    assert parameters["Deterministic"] is deterministic
    assert parameters["RandomSeed"]["antsRegistration"] == 1  # seed 0, shifted: 0 is "random"


def test_threads_do_not_enter_the_cache_hash(templateflow_home, tmp_path) -> None:
    t1ws = _t1ws(tmp_path)

    def hashes(**options) -> dict[str, str]:
        workflow = init_bids_mdd_wf(t1ws=t1ws, bids_dir=tmp_path, output_dir=tmp_path / "out",
                                    options=PreprocOptions(**options))
        return {node.fullname: node.inputs.get_hashval()[1]
                for node in workflow._create_flat_graph().nodes()}

    one = hashes(omp_nthreads=1)
    assert hashes(omp_nthreads=4) == one
    seeded = hashes(omp_nthreads=1, seed=5)
    changed = sorted(name.split(".")[-1] for name in one if seeded[name] != one[name])
    assert changed == ["derivatives", "derivatives", "register", "register"]


def test_a_change_of_step_settings_changes_the_cache_hash(templateflow_home, tmp_path,
                                                         monkeypatch) -> None:
    """Settings changed in code (a new release's Atropos iterations, say) reach nipype's hash:
    a rerun recomputes that step instead of passing an older result off as this version's."""
    t1ws = _t1ws(tmp_path)

    def hashes() -> dict[str, str]:
        workflow = init_bids_mdd_wf(t1ws=t1ws, bids_dir=tmp_path, output_dir=tmp_path / "out",
                                    options=PreprocOptions())
        return {node.fullname.split(".", 1)[1]: node.inputs.get_hashval()[1]
                for node in workflow._create_flat_graph().nodes()}

    before = hashes()
    released = PreprocSettings.for_mode

    def next_release(cls, *args) -> PreprocSettings:
        settings = released(*args)
        return dataclasses.replace(settings, segmentation=dataclasses.replace(
            settings.segmentation, iterations=4))

    monkeypatch.setattr(PreprocSettings, "for_mode", classmethod(next_release))
    after = hashes()
    changed = sorted(name for name in before if after[name] != before[name])
    assert changed == [f"anat_preproc_{s}.{step}" for s in ("subject01", "subject02_session1")
                       for step in ("derivatives", "segment")]


# --- deterministic mode ------------------------------------------------------------------------

def _digests(out: Path) -> dict[str, str]:
    return {str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(out.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def deterministic_run(templateflow_home, tmp_path_factory) -> dict:
    """Two SYNTHETIC participants, --deterministic --nprocs 1, uninterrupted."""
    root = tmp_path_factory.mktemp("deterministic")
    bids = root / "bids"
    generate_cohort(bids, CohortSpec(n_mdd=1, n_hc=1, seed=11, resolution=4.0), n_jobs=1)
    out = root / "out1"
    assert main([str(bids), str(out), "participant", "-w", str(root / "work1"), "--sloppy",
                 "--deterministic", "--nprocs", "1", "--models", "demo"]) == 0
    return {"bids": bids, "out": out, "digests": _digests(out)}


def test_deterministic_mode_records_one_thread_everywhere(deterministic_run) -> None:
    """What --deterministic sets, as the sidecars record it (the byte-identity across --nprocs
    is checked by the crash-and-resume test below, which runs with --nprocs 2)."""
    out = deterministic_run["out"]
    # per participant: 8 preprocessing images and 6 attention maps (the demo bundles)
    assert len(deterministic_run["digests"]) == 2 * 14
    sidecar = json.loads(next(out.rglob("*_label-GM_probseg.json")).read_text())
    assert sidecar["Parameters"]["Deterministic"] is True
    assert set(sidecar["Parameters"]["Threads"].values()) == {1}
    attention = json.loads(next(out.rglob("*_attention.json")).read_text())
    assert attention["Parameters"]["Threads"] == 1
    assert (attention["Parameters"]["BatchSize"], attention["Parameters"]["RandomSeed"]) == (1, 0)
    assert sidecar["Parameters"]["RandomSeed"]["antsRegistration"] == 1
    assert not (out.parent / "work1" / "bids_mdd_wf" / "graph.json").exists()  # no report


def test_participants_run_one_after_another_and_a_finished_one_is_skipped_whole(
        deterministic_run, caplog) -> None:
    """With one process, the first participant's every step ends before the second's first
    begins (depth-first). A rerun with other thread counts finds both finished and writes
    nothing; one derivative removed makes its participant go through the graph again (its
    nipype cache: the same bytes back) while the other is still skipped."""
    import logging

    out, work = deterministic_run["out"], deterministic_run["bids"].parent / "work1"
    steps = {label: [path.stat().st_mtime_ns for path in
                     (work / "bids_mdd_wf" / f"anat_preproc_subject{label}").glob("*/result_*")]
             for label in ("001", "002")}
    assert len(steps["001"]) == len(steps["002"]) >= 10
    assert max(steps["001"]) < min(steps["002"])
    written = {path: path.stat().st_mtime_ns for path in out.glob("sub-*/**/*") if path.is_file()}
    args = [str(deterministic_run["bids"]), str(out), "participant", "-w", str(work),
            "--sloppy", "--nprocs", "2", "--omp-nthreads", "2", "--skip-bids-validation",
            "--models", "demo"]
    with caplog.at_level(logging.INFO, logger="bids_mdd"):
        assert main(args + ["--deterministic"]) == 0
    assert caplog.text.count("derivatives up to date with these inputs and options") == 2
    # every derivative, sidecar and prediction untouched
    assert {path: path.stat().st_mtime_ns for path in written} == written
    gm = next((out / "sub-002").rglob("*_label-GM_probseg.nii.gz"))
    gm.unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bids_mdd"):
        assert main(args + ["--deterministic"]) == 0
    assert caplog.text.count("derivatives up to date with these inputs and options") == 1
    assert _digests(out) == deterministic_run["digests"]


# --- crash and resume --------------------------------------------------------------------------

def test_killed_at_five_points_then_resumed_is_byte_identical(deterministic_run,
                                                             tmp_path) -> None:
    """SIGKILL (the whole process group, as the OOM killer or a cluster's hard limit does)
    inside registration, segmentation, the writing of an image and its sidecar, inference
    and the report, each run resuming the last (--deterministic --nprocs 2); the last run
    completes, leaves no temporary file or in-progress marker, and its outputs equal the
    uninterrupted --nprocs 1 run's: deterministic mode holds across --nprocs and crashes."""
    import subprocess
    import sys

    out, work = tmp_path / "out", tmp_path / "work"
    args = [str(deterministic_run["bids"]), str(out), "participant", "-w", str(work),
            "--sloppy", "--deterministic", "--nprocs", "2", "--skip-bids-validation",
            "--participant-label", "001", "--models", "demo"]
    helper = CRASH_AT
    left = {}
    for point in ("registration", "segmentation", "writing", "inference", "report"):
        killed = subprocess.run([sys.executable, str(helper), point, *args],
                                start_new_session=True, capture_output=True, text=True)
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        left[point] = sorted(p.name for p in out.rglob(".bids_mdd-*"))
        if point == "segmentation":  # registration finished in this run: never recomputed
            registered = next((work / "bids_mdd_wf" / "anat_preproc_subject001" /
                               "register").glob("result_*.pklz"))
            stamp = registered.stat().st_mtime_ns
    assert any(".bids_mdd-tmp-" in name for name in left["writing"])  # killed mid-write
    assert ".bids_mdd-in-progress.json" in left["inference"]
    assert main(args) == 0
    assert registered.stat().st_mtime_ns == stamp
    assert not list(out.rglob(".bids_mdd-*"))
    uninterrupted = {path: digest for path, digest in deterministic_run["digests"].items()
                     if path.startswith("sub-001/")}
    assert len(uninterrupted) == 14 and _digests(out) == uninterrupted
    assert (out / "sub-001.html").is_file()


@pytest.mark.parametrize("signum, to_group", [(signal.SIGTERM, False), (signal.SIGINT, True)])
def test_signal_mid_run_stops_every_worker_and_the_rerun_is_byte_identical(
        deterministic_run, tmp_path, signum, to_group) -> None:
    """SIGTERM to the main process (kill, timeout, SLURM's pre-emption) or SIGINT to the
    process group (Ctrl-C) while a registration of a two-participant run is in a worker: one
    "interrupted" line, exit 128 + the signal, no traceback, no process of the run alive 10 s
    later, both participants still marked in progress; after SIGTERM, the rerun completes
    with the uninterrupted run's bytes (SIGINT's rerun would repeat it)."""
    import subprocess
    import sys
    import time

    out, work, marker = tmp_path / "out", tmp_path / "work", tmp_path / "registering"
    args = [str(deterministic_run["bids"]), str(out), "participant", "-w", str(work),
            "--sloppy", "--deterministic", "--nprocs", "2", "--skip-bids-validation",
            "--models", "demo"]
    run = subprocess.Popen([sys.executable, str(CRASH_AT),
                            "registration", *args],
                           env={**os.environ, "CRASH_AT_ACTION": f"mark:{marker}"},
                           start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.1)
    (os.killpg if to_group else os.kill)(run.pid, signum)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signum, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("bids_mdd:")]
    assert len(lines) == 1 and lines[0].startswith(
        f"bids_mdd: interrupted by {signal.Signals(signum).name}: stopped "), lines
    assert "rerun the same command to resume" in lines[0] and "Traceback" not in stderr
    time.sleep(10)
    assert _group_alive(run.pid) == []
    assert all(in_progress_path(out, label).is_file() for label in ("001", "002"))
    if signum == signal.SIGINT:
        return
    assert main(args) == 0
    assert not list(out.rglob(".bids_mdd-*"))
    assert _digests(out) == deterministic_run["digests"]


def test_sigkill_of_the_main_process_leaves_no_worker_and_the_rerun_is_byte_identical(
        deterministic_run, tmp_path) -> None:
    """SIGKILL (the OOM killer, ``scancel --signal=KILL``, a node's time limit) cannot be
    handled: the kernel's parent-death signal ends the workers with the main process, so no
    process of the run is alive 10 s later (before, nipype's workers waited for tasks,
    re-parented to init, indefinitely), and the rerun completes with the uninterrupted run's
    bytes."""
    import subprocess
    import sys
    import time

    out, work, marker = tmp_path / "out", tmp_path / "work", tmp_path / "registering"
    args = [str(deterministic_run["bids"]), str(out), "participant", "-w", str(work),
            "--sloppy", "--deterministic", "--nprocs", "2", "--skip-bids-validation",
            "--models", "demo"]
    run = subprocess.Popen([sys.executable, str(CRASH_AT), "registration", *args],
                           env={**os.environ, "CRASH_AT_ACTION": f"mark:{marker}"},
                           start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    assert len(_group_alive(run.pid)) >= 3  # the main process and its two workers
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=60)
    assert run.returncode == -signal.SIGKILL
    time.sleep(10)
    try:
        assert _group_alive(run.pid) == []
    finally:  # no orphan outlives a failure of this test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    assert main(args) == 0
    assert not list(out.rglob(".bids_mdd-*"))
    assert _digests(out) == deterministic_run["digests"]


def _group_alive(pgid: int) -> list[str]:
    """The processes of process group ``pgid`` still alive (zombies are not), from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append((stat.parent / "cmdline").read_text().replace("\0", " ")[:120])
        except (OSError, IndexError):
            continue
    return alive
