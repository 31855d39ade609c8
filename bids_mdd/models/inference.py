"""Apply model bundles to participants: ensemble predictions and attention maps (guided
backpropagation for regressors, the signed log-odds gradient for the classifier).

Bundles are loaded once (:func:`load_models`) and then serve every participant of the run, a
batch of participants per forward pass; a batch's arrays are dropped once its outputs are
written, so memory does not grow with the number of participants.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.fx.experimental.optimization import fuse

from bids_mdd.bids.outputs import MODEL_INPUTS
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.attention import input_gradient
from bids_mdd.models.bundle import MODEL_JSON, Bundle, find_bundles
from bids_mdd.models.card import ModelCard
from bids_mdd.models.domain import DomainModel
from bids_mdd.models.harmonization import BundleHarmonization, SiteAdjustment, SiteStatus
from bids_mdd.models.inputs import (
    NORMALIZATIONS,
    InputSpec,
    normalize,
    prepare,
    read_on_grid,
    zoom_tensor,
)
from bids_mdd.models.task import Task

LOGGER = logging.getLogger(__name__)

ATTENTION_METHOD = {
    Task.CLASSIFICATION: "gradient of the MDD log-odds (logit MDD - logit control), sign flipped: "
                      "positive where more input (GM) lowers P(MDD); guided backpropagation was "
                      "rejected for the classifier (benchmarks/saliency_synthetic.py)",
    Task.REGRESSION: "guided backpropagation of the predicted target (paper B, eq. 3), absolute "
                  "value",
}
ATTENTION_UNITS = ("the map inside the brain (non-zero input voxels) divided by the brain mean "
                   "of its absolute value, per fold model; then the mean over fold models")


#: The model sets shipped in the package, by the name ``--models`` accepts for them.
PACKAGED_MODEL_SETS = {
    "ds002748": "trained on the 72 scans of OpenNeuro ds002748 (one site, 51 MDD, 21 controls); "
                "research use, not for diagnosis: read their model cards",
    "demo": "trained on SYNTHETIC data; their outputs mean nothing clinically",
}
DEFAULT_MODEL_SET = "ds002748"


def packaged_models_dir(name: str = DEFAULT_MODEL_SET) -> Path:
    """The folder of one packaged model set (``bids_mdd/data/models/<name>``)."""
    if name not in PACKAGED_MODEL_SETS:
        raise BidsMddError(f"no packaged model set {name!r}; the package ships "
                           f"{', '.join(PACKAGED_MODEL_SETS)}", ExitCode.USAGE)
    return Path(str(files("bids_mdd") / "data" / "models" / name))


def _holds_bundles(path: Path) -> bool:
    return (path / MODEL_JSON).is_file() or any(path.glob(f"*/{MODEL_JSON}"))


def resolve_models(models: list[Path] | None) -> list[Path]:
    """``--models`` values as folders. The name of a packaged set (e.g. ``demo``) means that set
    unless a folder of that name holding bundles exists (``make demo`` runs beside a ``demo/``
    dataset folder); anything else is taken as a path. None means the default set."""
    if not models:
        LOGGER.warning("no --models given: using the packaged %s bundles, %s",
                       DEFAULT_MODEL_SET, PACKAGED_MODEL_SETS[DEFAULT_MODEL_SET])
        return [packaged_models_dir()]
    resolved = []
    for path in models:
        if str(path) in PACKAGED_MODEL_SETS and not _holds_bundles(path):
            LOGGER.info("--models %s: the packaged bundles, %s", path,
                        PACKAGED_MODEL_SETS[str(path)])
            path = packaged_models_dir(str(path))
        elif not path.exists():
            raise BidsMddError(f"--models {path}: neither a folder nor a packaged model set "
                               f"(the package ships {', '.join(PACKAGED_MODEL_SETS)}); give a "
                               "bundle folder, a folder of bundles or one of those names",
                               ExitCode.MISSING_INPUT)
        resolved.append(path)
    return resolved


def check_input_spec(bundle: Bundle) -> InputSpec:
    """The bundle's input spec, if the participant level writes that derivative on that grid.

    Raises BidsMddError (65) naming the bundle and what it expects otherwise: a bundle is never
    fed a silently resampled or differently normalised image.
    """
    where = bundle.path / "model.json"
    try:
        spec = bundle.input_spec
        spec.grid  # noqa: B018  (raises KeyError for an unknown grid)
    except (KeyError, TypeError, ValueError) as exc:
        raise BidsMddError(f"{where}: input spec {bundle.meta['input']!r} is incomplete or names "
                           f"an unknown grid ({exc}); retrain the bundle with bids_mdd-train",
                           ExitCode.BAD_DATA) from exc
    entities = {k: v for k, v in spec.entities.items() if k != "extension"}
    if entities not in MODEL_INPUTS.values():
        readable = "_".join(f"{k}-{v}" for k, v in sorted(entities.items()))
        raise BidsMddError(f"{where}: the model reads '{readable}', which bids_mdd's "
                           "preprocessing does not write; use a bundle trained on bids_mdd "
                           "derivatives (bids_mdd-train)", ExitCode.BAD_DATA)
    if list(spec.grid.shape) != list(bundle.meta["input"].get("grid_shape", spec.grid.shape)):
        raise BidsMddError(f"{where}: trained on a {bundle.meta['input']['grid_shape']} grid, but "
                           f"preprocessing writes {list(spec.grid.shape)} at res-{spec.grid.res}",
                           ExitCode.BAD_DATA)
    if spec.normalization not in NORMALIZATIONS or not 0 < spec.zoom <= 1:
        raise BidsMddError(f"{where}: normalization {spec.normalization!r} / zoom {spec.zoom} "
                           f"not supported (normalizations {NORMALIZATIONS}, 0 < zoom <= 1)",
                           ExitCode.BAD_DATA)
    return spec


@dataclass
class LoadedModel:
    """A verified bundle with its fold networks in eval mode on the device."""

    bundle: Bundle
    spec: InputSpec
    nets: list[nn.Module]
    device: str
    domain: DomainModel | None = None
    harmonization: BundleHarmonization | None = None

    @property
    def card(self) -> ModelCard | None:
        return self.bundle.card

    @property
    def target(self) -> str:
        """What the model predicts: the classifier's positive class ("MDD") or the target."""
        return self.bundle.outputs[-1] if self.bundle.task == Task.REGRESSION else "MDD"

    def to_json(self) -> dict[str, Any]:
        """Who this model is, for sidecars: name, version, task, weights and their sha256."""
        meta = self.bundle.meta
        bundle = self.bundle
        return {"name": bundle.name, "version": bundle.version, "task": str(bundle.task),
                "architecture": bundle.architecture, "outputs": bundle.outputs,
                "input": meta["input"], "synthetic": bundle.synthetic,
                "intended_use": bundle.intended_use, "weights": bundle.weights,
                "path": str(self.bundle.path),
                "card": self.card.to_json() if self.card else None,
                "domain": ({"method": meta["domain"]["method"],
                            "threshold": self.domain.threshold,
                            "quantile": self.domain.quantile,
                            "sha256": meta["domain"]["sha256"]} if self.domain else None),
                "harmonization": ({key: meta["harmonization"][key] for key in
                                   ("method", "site_column", "sites", "sha256")}
                                  if self.harmonization else None)}

    def site_adjustment(self, site: str | None) -> SiteAdjustment | None:
        """What the bundle's ComBat fit does to a scan of ``site`` (None: the bundle has none)."""
        if self.harmonization is None:
            return None
        return self.harmonization.adjustment(site, tuple(self.spec.shape))


def _for_inference(net: nn.Module, device: str) -> nn.Module:
    """Frozen weights, BatchNorm folded into the preceding convolutions, fast memory layout.

    Folding (torch.fx's ``fuse``) is exact in eval mode and keeps every ``nn.ReLU`` module, so
    guided backpropagation is unchanged; it removed BatchNorm's backward, about a fifth of a
    full-size DFRN attention map (benchmarks/inference.py).
    """
    net.requires_grad_(False)  # attention needs input gradients only
    try:
        net = fuse(net)
    except Exception as exc:  # a network torch.fx cannot trace runs unfused
        LOGGER.debug("not folding BatchNorm of %s: %s", type(net).__name__, exc)
    if device == "cpu":  # oneDNN's fastest 3D convolutions (benchmarks/models.py)
        net = net.to(memory_format=torch.channels_last_3d)
    return net


def load_models(models: list[Path] | None, device: str) -> list[LoadedModel]:
    """Load, verify and check every bundle under ``models`` (folders or packaged set names,
    :func:`resolve_models`; default: the packaged ds002748 bundles).

    Raises BidsMddError: 66/65 from the bundles, 64 when two bundles predict the same target.
    """
    bundles = [bundle for path in resolve_models(models) for bundle in find_bundles(path)]
    loaded: list[LoadedModel] = []
    for bundle in bundles:
        spec = check_input_spec(bundle)
        nets = [_for_inference(net, device) for net in bundle.ensemble(device)]
        loaded.append(LoadedModel(bundle, spec, nets, device, bundle.domain_model(),
                                  bundle.harmonization()))
        if bundle.card is None:  # (a malformed card stops the run here, before any work)
            LOGGER.warning("model %s has no model card: nothing says how well it performs",
                           bundle.name)
        if bundle.synthetic:
            LOGGER.warning("model %s was trained on SYNTHETIC data: %s", bundle.name,
                           bundle.intended_use or "not for clinical use")
    targets = [model.target for model in loaded]
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        names = [m.bundle.path.name for m in loaded if m.target in repeated]
        raise BidsMddError(f"--models: several bundles predict {', '.join(repeated)} "
                           f"({', '.join(names)}); pass one bundle per target", ExitCode.USAGE)
    return loaded


@dataclass(frozen=True)
class ModelResult:
    """One model applied to one image: the ensemble's value and spread, and its map."""

    model: LoadedModel
    value: float
    std: float
    n_models: int
    attention: np.ndarray | None  # on the input's full grid (spec.grid); None: not computed
    source: Path
    distance: float | None = None  # to the training distribution (None: no domain model)
    site: SiteAdjustment | None = None  # the bundle's ComBat of it (None: the bundle has none)

    @property
    def in_distribution(self) -> bool | None:
        """Whether the input lies inside the bundle's training distribution (None: unknown)."""
        if self.distance is None or self.model.domain is None:
            return None
        return self.distance <= self.model.domain.threshold


def _fold_values(model: LoadedModel, index: int, out: torch.Tensor) -> np.ndarray:
    """Each sample's P(MDD) (classifier) or prediction in target units (regressor), one fold."""
    if model.bundle.task == Task.CLASSIFICATION:
        return torch.softmax(out.float(), 1)[:, -1].cpu().numpy().astype(float)
    mean, sd = model.bundle.target_scaling(index)
    return out[:, 0].float().cpu().numpy().astype(float) * sd + mean


def _score(task: Task) -> Callable[[torch.Tensor], torch.Tensor]:
    """The scalar whose input gradient is the map: the MDD log-odds, or the prediction."""
    if task == Task.CLASSIFICATION:
        return lambda out: out[:, -1] - out[:, 0]
    return lambda out: out[:, 0]


def model_input(model: LoadedModel, image: Path) -> np.ndarray:
    """The image's data on the model's grid, checked (raises BidsMddError 65 naming it)."""
    data = read_on_grid(image, model.spec)
    if not np.any(data != 0):
        raise BidsMddError(f"{image}: the image is empty (all zeros); rerun preprocessing",
                           ExitCode.BAD_DATA)
    return data


def apply_model(model: LoadedModel, image: Path, attention: bool = True) -> ModelResult:
    """:func:`apply_model_batch` on one image."""
    return apply_model_batch(model, [model_input(model, image)], [image], attention)[0]


def _fold_outputs(net: nn.Module, x: torch.Tensor, task: Task,
                  transform: Callable[[torch.Tensor], torch.Tensor], attention: bool,
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One fold model's output and input gradient (None without ``attention``).

    The map's backward reuses the prediction's forward pass; without a map the forward runs
    under ``inference_mode``, which keeps no activations for a backward pass.
    """
    if attention:
        return input_gradient(net, x, _score(task), transform,
                              guided=task != Task.CLASSIFICATION)
    with torch.inference_mode():
        return net(transform(x)), None


def apply_model_batch(model: LoadedModel, inputs: list[np.ndarray], sources: list[Path],
                      attention: bool = True, sites: list[str | None] | None = None,
                      ) -> list[ModelResult]:
    """Run every fold model on a batch of inputs (from :func:`model_input`); return, for each,
    the mean, SD (ddof 0) and (with ``attention``) mean attention map over the fold models.

    ``sites``: each input's site, for a bundle trained on harmonised inputs: its ComBat map of
    a known site follows the zoom to the network grid, inside the forward pass (so the maps
    are gradients with respect to the participant's own input); an unknown site's input, or
    one without a site, goes in unharmonised and its result says so.

    The batch is one forward and one backward pass per fold model: in eval mode the samples do
    not interact, so each sample's input gradient is that of its own score. Without
    ``attention`` it is one forward pass per fold model, and the results' maps are None.

    Attention: regressors, |guided backpropagation| (paper B); the classifier, minus the plain
    gradient of the MDD log-odds (signed): on a synthetic selection cohort guided maps missed
    the regions the classifier demonstrably relies on (benchmarks/saliency_synthetic.py).
    """
    brains = np.stack([data != 0 for data in inputs])
    x = torch.from_numpy(np.stack([normalize(data, model.spec) for data in inputs])[:, None])
    x = x.to(model.device)
    memory_format = (torch.channels_last_3d if model.device == "cpu"
                     else torch.contiguous_format)

    adjustments = [model.site_adjustment(site) for site in (sites or [None] * len(inputs))]
    combat = _combat_tensors(adjustments, tuple(model.spec.shape), model.device)

    def to_network_grid(tensor: torch.Tensor) -> torch.Tensor:
        zoomed = zoom_tensor(tensor, model.spec.zoom)
        if combat is not None:
            zoomed = zoomed * combat[0] + combat[1]
        return zoomed.contiguous(memory_format=memory_format)

    classifier = model.bundle.task == Task.CLASSIFICATION
    values = np.zeros((len(model.nets), len(inputs)))
    maps = np.zeros(brains.shape, np.float32) if attention else None
    for index, net in enumerate(model.nets):
        out, grad = _fold_outputs(net, x, model.bundle.task, to_network_grid, attention)
        values[index] = _fold_values(model, index, out)
        if grad is not None:
            fold_maps = (-grad if classifier else grad.abs())[:, 0].cpu().numpy() * brains
            for sample, (fold_map, brain) in enumerate(zip(fold_maps, brains)):
                scale = float(np.abs(fold_map[brain]).mean())
                maps[sample] += fold_map / max(scale, np.finfo(np.float32).tiny)
    if maps is not None:
        maps /= len(model.nets)
    distances = [None] * len(inputs)
    if model.domain is not None:  # of the input the networks saw
        seen = np.stack([prepare(data, model.spec) for data in inputs])
        if combat is not None:
            seen = seen * combat[0][:, 0].cpu().numpy() + combat[1][:, 0].cpu().numpy()
        distances = model.domain.distances(seen)
    return [ModelResult(model, float(np.mean(values[:, i])), float(np.std(values[:, i])),
                        len(model.nets), None if maps is None else maps[i], sources[i],
                        None if distances[i] is None else float(distances[i]), adjustments[i])
            for i in range(len(inputs))]


def _combat_tensors(adjustments: list[SiteAdjustment | None], shape: tuple[int, ...],
                    device: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The batch's ComBat scale and shift ((n, 1, *shape); 1 and 0 for an input left as it
    is), or None when no input of the batch is harmonised."""
    if not any(a is not None and a.status == SiteStatus.HARMONIZED for a in adjustments):
        return None
    scale = np.ones((len(adjustments), 1, *shape), np.float32)
    shift = np.zeros_like(scale)
    for i, adjustment in enumerate(adjustments):
        if adjustment is not None and adjustment.status == SiteStatus.HARMONIZED:
            scale[i, 0], shift[i, 0] = adjustment.scale, adjustment.shift
    return torch.from_numpy(scale).to(device), torch.from_numpy(shift).to(device)
