"""The one derivatives sink of the preprocessing workflow: names, sidecars, atomic writes."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import nibabel as nib
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_mdd.bids.atomic import write_json
from bids_mdd.bids.derivatives import copy_file, provenance, write_image
from bids_mdd.bids.names import derivative_path
from bids_mdd.bids.outputs import OUTPUTS, image_metadata

#: Workflow node with threads (its sink input is ``threads_<node>``) -> the step's name in the
#: sidecars' ``Parameters.Threads``.
THREADED_STEPS = {"n4": "N4", "register": "Registration", "brain_mask": "BrainMask",
                  "segment": "Segmentation", "gm_to_mni": "ModulatedGM",
                  "t1w_to_mni": "NormalizedT1w"}


def software_versions() -> dict[str, str]:
    return {name: version(name) for name in ("antspyx", "nipype", "nilearn", "deepbet")}


class _SinkIn(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    source_entities = traits.Str(mandatory=True, desc="JSON of the source T1w's entities")
    sources = traits.List(traits.Str, mandatory=True, desc="BIDS URIs of the inputs")
    parameters = traits.Str(mandatory=True, desc="JSON of the workflow parameters")
    brain_extraction = traits.Str(mandatory=True, desc="how the brain mask was made")
    skull_stripped = traits.Bool(mandatory=True, desc="the input T1w was skull-stripped")
    # threads that computed each step's result (THREADED_STEPS)
    threads_n4 = traits.Int(mandatory=True)
    threads_register = traits.Int(mandatory=True)
    threads_brain_mask = traits.Int(mandatory=True)
    threads_segment = traits.Int(mandatory=True)
    threads_gm_to_mni = traits.Int(mandatory=True)
    threads_t1w_to_mni = traits.Int(mandatory=True)
    t1w_preproc = File(exists=True, mandatory=True)
    brain_mask = File(exists=True, mandatory=True)
    csf = File(exists=True, mandatory=True)
    gm = File(exists=True, mandatory=True)
    wm = File(exists=True, mandatory=True)
    xfm = File(exists=True, mandatory=True)
    gm_modulated = File(exists=True, mandatory=True)
    gm_smoothed = File(exists=True, mandatory=True)
    t1w_mni = File(exists=True, mandatory=True)
    qc = File(exists=True, mandatory=True)
    fig_segmentation = File(exists=True, mandatory=True)
    fig_registration = File(exists=True, mandatory=True)


class _SinkOut(TraitedSpec):
    out_files = traits.List(traits.Str)


class DerivativesSink(SimpleInterface):
    """Write every preprocessing output under OUTPUT_DIR with its sidecar."""

    input_spec = _SinkIn
    output_spec = _SinkOut

    def _run_interface(self, runtime):
        entities = json.loads(self.inputs.source_entities)
        parameters = {**json.loads(self.inputs.parameters),
                      "BrainExtraction": self.inputs.brain_extraction,
                      # the threads of the run that computed each (possibly cached) result
                      "Threads": {name: getattr(self.inputs, f"threads_{node}")
                                  for node, name in THREADED_STEPS.items()}}
        sidecar = provenance(self.inputs.sources, parameters, software=software_versions())
        written = []
        for name, extra in OUTPUTS.items():
            source = getattr(self.inputs, name)
            path = derivative_path(self.inputs.output_dir, **entities, **extra)
            if name == "qc":
                metrics = json.loads(Path(source).read_text(encoding="utf-8"))
                write_json(path, {**metrics, **sidecar})
            elif name == "xfm":
                copy_file(source, path, sidecar)
            elif name.startswith("fig_"):
                copy_file(source, path)
            else:
                write_image(path, nib.load(source), {**sidecar, **image_metadata(
                    name, self.inputs.sources[0], self.inputs.skull_stripped)})
            written.append(str(path))
        self._results["out_files"] = written
        return runtime
