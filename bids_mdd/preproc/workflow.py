"""The participant preprocessing workflow: T1w -> native tissue maps and MNI-space model inputs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nipype.pipeline import engine as pe

from bids_mdd.bids.derivatives import RAW_URI_PREFIX
from bids_mdd.bids.discovery import T1wInput
from bids_mdd.preproc import interfaces as ifc
from bids_mdd.preproc.ants_steps import PreprocSettings, ants_registration_seed, settings_to_json
from bids_mdd.preproc.sink import THREADED_STEPS, DerivativesSink
from bids_mdd.spaces.templates import TEMPLATE, template_brain_mask, template_t1w

#: nipype memory estimate (GB) of the costliest nodes (registration, segmentation): the
#: largest any node asks for.
LARGEST_NODE_MEM_GB = 3.0


@dataclass(frozen=True)
class PreprocOptions:
    """Options of the preprocessing workflow (written into every sidecar; the threads that
    computed each result are recorded by the sink, since a cached result may be older)."""

    skull_strip: str = "auto"
    sloppy: bool = False
    seed: int = 0
    omp_nthreads: int = 1
    fwhm: float = 8.0
    segmentation: str = "priors"
    deterministic: bool = False

    def settings(self) -> PreprocSettings:
        """The steps' settings for this mode (decoded in one place: PreprocSettings)."""
        return PreprocSettings.for_mode(self.sloppy, self.segmentation)

    def sidecar_parameters(self) -> dict:
        return {"Template": TEMPLATE, "SkullStrip": self.skull_strip,
                "Sloppy": self.sloppy, "SmoothingFWHM": self.fwhm,
                "RandomSeed": {"bids_mdd": self.seed,
                               "antsRegistration": ants_registration_seed(self.seed),
                               "Atropos": "ANTs' constant seed (--use-random-seed 0)"},
                "Deterministic": self.deterministic, **self.settings().describe()}


def bids_uri(t1w: T1wInput, bids_dir: Path) -> str:
    """The BIDS URI of an input file (``bids:raw:sub-01/anat/...``; ``raw`` is the input
    dataset in dataset_description.json's ``DatasetLinks``).

    Symlinks are not followed: in DataLad/git-annex datasets every file links elsewhere.
    """
    path, root = Path(os.path.abspath(t1w.path)), Path(os.path.abspath(bids_dir))
    if not path.is_relative_to(root):
        path, root = t1w.path.resolve(), bids_dir.resolve()
    if not path.is_relative_to(root):
        return path.as_uri()
    return f"{RAW_URI_PREFIX}{path.relative_to(root).as_posix()}"


def workflow_name(t1w: T1wInput) -> str:
    """A work-dir-safe, unique name per input T1w."""
    parts = [f"{key}-{value}" for key, value in t1w.output_entities().items()]
    return "anat_preproc_" + "_".join(parts).replace("-", "")


def init_anat_preproc_wf(*, t1w: T1wInput, bids_dir: Path, output_dir: Path,
                         options: PreprocOptions) -> pe.Workflow:
    """Build the preprocessing workflow of one T1w (nipype; resumable from its work dir)."""
    workflow = pe.Workflow(name=workflow_name(t1w))
    template, template_mask = str(template_t1w()), str(template_brain_mask())
    threads = {"num_threads": options.omp_nthreads}
    settings = options.settings()

    def node(interface, name: str, mem_gb: float = 1.0, **inputs) -> pe.Node:
        created = pe.Node(interface(**inputs), name=name, mem_gb=mem_gb,
                          n_procs=inputs.get("num_threads", 1))
        return created

    validate = node(ifc.ValidateT1w, "validate", in_file=str(t1w.path),
                    skull_strip=options.skull_strip)
    n4 = node(ifc.N4BiasCorrection, "n4", mem_gb=2.0, field_mm=settings.n4_field_mm, **threads)
    # the steps' settings are node inputs, so that nipype's cache follows them
    register = node(ifc.RegisterToTemplate, "register", mem_gb=LARGEST_NODE_MEM_GB,
                    template=template, template_mask=template_mask, seed=options.seed,
                    settings=settings_to_json(settings.registration), **threads)
    mask = node(ifc.BrainMask, "brain_mask", template_mask=template_mask, **threads)
    segment = node(ifc.SegmentTissues, "segment", mem_gb=LARGEST_NODE_MEM_GB,
                   settings=settings_to_json(settings.segmentation), **threads)
    modulate = node(ifc.ModulatedGM, "gm_to_mni", mem_gb=2.0, fwhm=options.fwhm, **threads)
    normalize = node(ifc.NormalizedT1w, "t1w_to_mni", mem_gb=2.0, **threads)
    qc = node(ifc.QCMetrics, "qc", template=template, template_mask=template_mask)
    figures = node(ifc.QCFigures, "figures", template=template, template_mask=template_mask)
    sink = node(DerivativesSink, "derivatives", output_dir=str(output_dir),
                source_entities=json.dumps(t1w.output_entities()),
                sources=[bids_uri(t1w, bids_dir)],
                parameters=json.dumps(options.sidecar_parameters()))
    sink.overwrite = True  # cheap: always (re)write outputs, even when everything is cached

    if options.segmentation == "priors":
        workflow.connect(register, "inverse", segment, "inverse")
    workflow.connect([
        (validate, n4, [("out_file", "in_file")]),
        (validate, register, [("skull_stripped", "skull_stripped")]),
        (n4, register, [("out_file", "in_file")]),
        (validate, mask, [("skull_stripped", "skull_stripped")]),
        (validate, sink, [("skull_stripped", "skull_stripped")]),
        (n4, mask, [("out_file", "in_file")]),
        (register, mask, [("inverse", "inverse")]),
        (n4, segment, [("out_file", "in_file")]),
        (mask, segment, [("out_file", "mask")]),
        (mask, sink, [("method", "brain_extraction")]),
        (segment, modulate, [("gm", "gm")]),
        (register, modulate, [("forward", "forward")]),
        (n4, normalize, [("out_file", "in_file")]),
        (mask, normalize, [("out_file", "mask")]),
        (register, normalize, [("forward", "forward")]),
        (mask, qc, [("out_file", "mask")]),
        (segment, qc, [("csf", "csf"), ("gm", "gm"), ("wm", "wm")]),
        (normalize, qc, [("out_file", "t1w_mni")]),
        (n4, sink, [("out_file", "t1w_preproc")]),
        (mask, sink, [("out_file", "brain_mask")]),
        (segment, sink, [("csf", "csf"), ("gm", "gm"), ("wm", "wm")]),
        (register, sink, [("forward", "xfm")]),
        (modulate, sink, [("modulated", "gm_modulated"), ("smoothed", "gm_smoothed")]),
        (normalize, sink, [("out_file", "t1w_mni")]),
        (qc, sink, [("out_file", "qc")]),
        (n4, figures, [("out_file", "t1w")]),
        (mask, figures, [("out_file", "mask")]),
        (segment, figures, [("gm", "gm"), ("wm", "wm")]),
        (normalize, figures, [("out_file", "t1w_mni")]),
        (figures, sink, [("segmentation", "fig_segmentation"),
                         ("registration", "fig_registration")]),
    ])
    for name in THREADED_STEPS:
        workflow.connect(workflow.get_node(name), "num_threads", sink, f"threads_{name}")
    return workflow


#: Name of the workflow holding every participant's preprocessing (its folder in the work dir).
TOP_WORKFLOW = "bids_mdd_wf"


def init_bids_mdd_wf(*, t1ws: list[T1wInput], bids_dir: Path, output_dir: Path,
                     options: PreprocOptions) -> pe.Workflow:
    """One nipype graph preprocessing every T1w (as fMRIPrep's ``init_fmriprep_wf``): MultiProc
    then keeps ``--nprocs`` cores busy across participants, within ``--mem-gb``.

    Each T1w is a sub-workflow named by :func:`workflow_name`, so its nodes' work folders, and so
    their caches, do not depend on which other participants share the run (an HPC array task of
    one participant resumes a run of many, and the other way round).
    """
    workflow = pe.Workflow(name=TOP_WORKFLOW)
    workflow.add_nodes([init_anat_preproc_wf(t1w=t1w, bids_dir=bids_dir, output_dir=output_dir,
                                             options=options) for t1w in t1ws])
    return workflow
