"""nipype interfaces wrapping the preprocessing functions (nipype caches each by its inputs)."""

from __future__ import annotations

import json
import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_mdd.preproc import ants_steps
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID


class _Threaded(BaseInterfaceInputSpec):
    # nohash: a rerun with other thread counts reuses the cached result (as nipype's own ANTs
    # interfaces do); the thread count that made a result is an output, for the sidecars
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK and torch threads")


class _ThreadedOut(TraitedSpec):
    num_threads = traits.Int(desc="the threads this result was computed with")


class _ThreadedInterface(SimpleInterface):
    """Runs its step with ``num_threads`` ITK threads and reports them as an output."""

    def _run_interface(self, runtime):
        ants_steps.set_threads(self.inputs.num_threads)
        self._results["num_threads"] = self.inputs.num_threads
        self._run_step(runtime.cwd)
        return runtime

    def _run_step(self, cwd: str) -> None:
        raise NotImplementedError


class _ValidateIn(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    skull_strip = traits.Enum("auto", "force", "skip", usedefault=True)


class _ValidateOut(TraitedSpec):
    out_file = File(exists=True)
    skull_stripped = traits.Bool(desc="the input is treated as already skull-stripped")


class ValidateT1w(SimpleInterface):
    """Check, squeeze and reorient the T1w; decide whether it is already skull-stripped."""

    input_spec = _ValidateIn
    output_spec = _ValidateOut

    def _run_interface(self, runtime):
        self._results["out_file"] = ants_steps.validate_t1w(self.inputs.in_file, runtime.cwd)
        mode = self.inputs.skull_strip
        self._results["skull_stripped"] = (mode == "skip" or (
            mode == "auto" and ants_steps.is_skull_stripped(self._results["out_file"])))
        return runtime


class _N4In(_Threaded):
    in_file = File(exists=True, mandatory=True)
    field_mm = traits.Float(2.0, usedefault=True, desc="spacing the field is fitted at")


class _FileOut(TraitedSpec):
    out_file = File(exists=True)


class _ThreadedFileOut(_ThreadedOut):
    out_file = File(exists=True)


class N4BiasCorrection(_ThreadedInterface):
    """N4 bias-field correction (antspyx)."""

    input_spec = _N4In
    output_spec = _ThreadedFileOut

    def _run_step(self, cwd: str) -> None:
        self._results["out_file"] = ants_steps.n4_correct(self.inputs.in_file, cwd,
                                                          self.inputs.field_mm)


class _RegisterIn(_Threaded):
    in_file = File(exists=True, mandatory=True)
    template = File(exists=True, mandatory=True)
    template_mask = File(exists=True, mandatory=True)
    skull_stripped = traits.Bool(mandatory=True)
    seed = traits.Int(0, usedefault=True)
    settings = traits.Str(mandatory=True, desc="RegistrationSettings (settings_to_json)")


class _RegisterOut(_ThreadedOut):
    forward = File(exists=True, desc="composite transform resampling T1w images into MNI")
    inverse = File(exists=True, desc="composite transform resampling MNI images onto the T1w")


class RegisterToTemplate(_ThreadedInterface):
    """Affine + SyN registration to MNI152NLin2009cAsym (antspyx)."""

    input_spec = _RegisterIn
    output_spec = _RegisterOut

    def _run_step(self, cwd: str) -> None:
        result = ants_steps.register_to_template(
            self.inputs.in_file, self.inputs.template, self.inputs.template_mask,
            self.inputs.skull_stripped, cwd, self.inputs.seed,
            ants_steps.settings_from_json(ants_steps.RegistrationSettings,
                                          self.inputs.settings))
        self._results.update(forward=result.forward, inverse=result.inverse)


class _MaskIn(_Threaded):
    in_file = File(exists=True, mandatory=True)
    template_mask = File(exists=True, mandatory=True)
    inverse = File(exists=True, mandatory=True)
    skull_stripped = traits.Bool(mandatory=True)


class _MaskOut(_ThreadedOut):
    out_file = File(exists=True)
    method = traits.Str(desc="how the mask was made (for the sidecars)")


class BrainMask(_ThreadedInterface):
    """Native brain mask (input's non-zero voxels, deepbet, or the template mask warped back)."""

    input_spec = _MaskIn
    output_spec = _MaskOut

    def _run_step(self, cwd: str) -> None:
        self._results["out_file"], self._results["method"] = ants_steps.brain_mask(
            self.inputs.in_file, self.inputs.template_mask, self.inputs.inverse,
            self.inputs.skull_stripped, cwd, self.inputs.num_threads)


class _SegmentIn(_Threaded):
    in_file = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    settings = traits.Str(mandatory=True, desc="SegmentationSettings (settings_to_json)")
    inverse = File(exists=True, desc="MNI -> T1w transform, for the template priors")


class _SegmentOut(_ThreadedOut):
    csf = File(exists=True)
    gm = File(exists=True)
    wm = File(exists=True)


class SegmentTissues(_ThreadedInterface):
    """Atropos segmentation into CSF, GM and WM maps (template priors, or k-means)."""

    input_spec = _SegmentIn
    output_spec = _SegmentOut

    def _run_step(self, cwd: str) -> None:
        settings = ants_steps.settings_from_json(ants_steps.SegmentationSettings,
                                                 self.inputs.settings)
        inverse = self.inputs.inverse if isdefined(self.inputs.inverse) else None
        csf, gm, wm = ants_steps.segment_tissues(self.inputs.in_file, self.inputs.mask, cwd,
                                                 settings, inverse)
        self._results.update(csf=csf, gm=gm, wm=wm)


class _ModulateIn(_Threaded):
    gm = File(exists=True, mandatory=True)
    forward = File(exists=True, mandatory=True)
    fwhm = traits.Float(8.0, usedefault=True, desc="smoothing kernel FWHM (mm)")


class _ModulateOut(_ThreadedOut):
    modulated = File(exists=True)
    smoothed = File(exists=True)


class ModulatedGM(_ThreadedInterface):
    """Jacobian-modulated GM on the 1.5 mm classifier grid, and its smoothed copy."""

    input_spec = _ModulateIn
    output_spec = _ModulateOut

    def _run_step(self, cwd: str) -> None:
        from nilearn.image import smooth_img

        modulated = ants_steps.modulated_gm(self.inputs.gm, self.inputs.forward,
                                            CLASSIFIER_GRID, cwd)
        smoothed = os.path.join(cwd, "gm_smoothed.nii.gz")
        smooth_img(modulated, self.inputs.fwhm).to_filename(smoothed)
        self._results.update(modulated=modulated, smoothed=smoothed)


class _NormalizeIn(_Threaded):
    in_file = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    forward = File(exists=True, mandatory=True)


class NormalizedT1w(_ThreadedInterface):
    """Brain-masked, z-scored T1w on the 1 mm DFRN grid."""

    input_spec = _NormalizeIn
    output_spec = _ThreadedFileOut

    def _run_step(self, cwd: str) -> None:
        self._results["out_file"] = ants_steps.normalized_t1w(
            self.inputs.in_file, self.inputs.mask, self.inputs.forward, DFRN_GRID, cwd)


class _QCIn(BaseInterfaceInputSpec):
    mask = File(exists=True, mandatory=True)
    csf = File(exists=True, mandatory=True)
    gm = File(exists=True, mandatory=True)
    wm = File(exists=True, mandatory=True)
    t1w_mni = File(exists=True, mandatory=True)
    template = File(exists=True, mandatory=True)
    template_mask = File(exists=True, mandatory=True)


class QCMetrics(SimpleInterface):
    """TIV, tissue volumes and registration quality, as a JSON file."""

    input_spec = _QCIn
    output_spec = _FileOut

    def _run_interface(self, runtime):
        from bids_mdd.preproc.qc import qc_metrics, template_on_grid

        template, template_mask = template_on_grid(self.inputs.template,
                                                   self.inputs.template_mask, DFRN_GRID,
                                                   runtime.cwd)
        metrics = qc_metrics(self.inputs.mask, self.inputs.csf, self.inputs.gm, self.inputs.wm,
                             self.inputs.t1w_mni, template, template_mask)
        path = os.path.join(runtime.cwd, "qc_metrics.json")
        with open(path, "w", encoding="utf-8") as stream:
            json.dump(metrics, stream, indent=2)
        self._results["out_file"] = path
        return runtime


class _FiguresIn(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    gm = File(exists=True, mandatory=True)
    wm = File(exists=True, mandatory=True)
    t1w_mni = File(exists=True, mandatory=True)
    template = File(exists=True, mandatory=True)
    template_mask = File(exists=True, mandatory=True)


class _FiguresOut(TraitedSpec):
    segmentation = File(exists=True)
    registration = File(exists=True)


class QCFigures(SimpleInterface):
    """SVG figures of the segmentation (native) and of the registration (MNI)."""

    input_spec = _FiguresIn
    output_spec = _FiguresOut

    def _run_interface(self, runtime):
        from bids_mdd.preproc.figures import registration_figure, segmentation_figure

        self._results["segmentation"] = segmentation_figure(
            self.inputs.t1w, self.inputs.mask, self.inputs.gm, self.inputs.wm,
            os.path.join(runtime.cwd, "segmentation.svg"))
        self._results["registration"] = registration_figure(
            self.inputs.t1w_mni, self.inputs.template, self.inputs.template_mask,
            os.path.join(runtime.cwd, "registration.svg"))
        return runtime
