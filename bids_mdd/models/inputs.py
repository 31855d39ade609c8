"""What a model reads: which derivative, on which grid, zoomed how (one spec, used by training
and by the participant level, which refuses a bundle whose spec it cannot satisfy)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import NormalizeIntensity

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.spaces.grids import CLASSIFIER_GRID, DFRN_GRID, GRIDS, Grid

_SPACE = "MNI152NLin2009cAsym"


@dataclass(frozen=True)
class InputSpec:
    """A derivative (its entities, without subject/session) and how it becomes a tensor.

    ``zoom`` < 1 resamples the image (trilinear) before the network: the reduced grids of
    CPU-sized experiments; 1 is the papers' full grid. ``normalization``: "zscore" scales each
    image to zero mean, unit SD over its non-zero voxels (MONAI NormalizeIntensity), which
    removes global differences such as head size from modulated GM; "none" keeps values.
    """

    entities: dict[str, str] = field(default_factory=dict)
    zoom: float = 1.0
    normalization: str = "zscore"

    @property
    def grid(self) -> Grid:
        return GRIDS[self.entities["res"]]

    @property
    def shape(self) -> tuple[int, int, int]:
        """The network's input shape (after zoom)."""
        return tuple(int(np.floor(n * self.zoom)) for n in self.grid.shape)  # type: ignore

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-MNI affine of the network's input (the grid's, when ``zoom`` is 1)."""
        grid = self.grid
        spacing = grid.zoom * np.array(grid.shape) / np.array(self.shape)
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = np.array(grid.origin) + (spacing - grid.zoom) / 2  # voxel centres
        return affine

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "grid_shape": list(self.grid.shape), "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        return cls(entities=dict(data["entities"]), zoom=float(data.get("zoom", 1.0)),
                   normalization=str(data.get("normalization", "none")))


#: Paper A: smoothed Jacobian-modulated GM on the 1.5 mm grid.
GM_INPUT = InputSpec({"space": _SPACE, "res": CLASSIFIER_GRID.res, "label": "GM",
                      "desc": "smooth8modulated", "suffix": "probseg"})
#: Paper B: bias-corrected, brain-masked, z-scored T1w on the 1 mm grid.
T1W_INPUT = InputSpec({"space": _SPACE, "res": DFRN_GRID.res, "desc": "preproc",
                       "suffix": "T1w"})
DEFAULT_INPUTS = {"gm": GM_INPUT, "t1w": T1W_INPUT}


NORMALIZATIONS = ("zscore", "none")


def load_input(path: str | Path, spec: InputSpec) -> np.ndarray:
    """Load ``path`` as the float32 array the network takes (shape ``spec.shape``)."""
    return prepare(read_on_grid(path, spec), spec)


def prepare(data: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Image data on the full grid -> the network's input (normalised, zoomed)."""
    return zoom_array(normalize(data, spec), spec.zoom)


def normalize(data: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The spec's intensity normalisation of full-grid image data."""
    if spec.normalization == "zscore":
        return np.asarray(NormalizeIntensity(nonzero=True)(data), dtype=np.float32)
    if spec.normalization != "none":
        raise ValueError(f"unknown normalization {spec.normalization!r}; choose from "
                         f"{NORMALIZATIONS}")
    return data


def read_on_grid(path: str | Path, spec: InputSpec) -> np.ndarray:
    """The image's float32 data on the spec's full grid (before zoom).

    Raises BidsMddError (65) when the image is not on that grid or holds NaN/inf.
    """
    image = nib.load(str(path))
    grid = spec.grid
    if not grid.holds(image):
        raise BidsMddError(f"{path}: not on the {grid.res} mm MNI grid {grid.shape} the model "
                           "expects; rerun the participant level to regenerate it",
                           ExitCode.BAD_DATA)
    data = np.asarray(image.dataobj, dtype=np.float32)
    if not np.isfinite(data).all():
        raise BidsMddError(f"{path}: contains NaN or infinite values; rerun preprocessing",
                           ExitCode.BAD_DATA)
    # Subnormal values (below float32's smallest normal number) are zero to any network, but
    # every one costs the CPU's vector units a slow microcode assist in each convolution
    # touching it (torch.set_flush_denormal did not remove that cost): a background of them
    # made a full-size DFRN several times slower (docs/benchmarks.md).
    return np.where(np.abs(data) < np.finfo(np.float32).tiny, np.float32(0.0), data)


def zoom_array(data: np.ndarray, zoom: float) -> np.ndarray:
    """Resampling by ``zoom`` (area-weighted when shrinking, so no aliasing; else trilinear)."""
    if zoom == 1.0:
        return data
    tensor = torch.from_numpy(np.ascontiguousarray(data))[None, None]
    return zoom_tensor(tensor, zoom)[0, 0].numpy()


def zoom_tensor(tensor: torch.Tensor, zoom: float) -> torch.Tensor:
    """:func:`zoom_array` on a (batch, channel, x, y, z) tensor; differentiable."""
    if zoom == 1.0:
        return tensor
    size = tuple(int(np.floor(n * zoom)) for n in tensor.shape[2:])
    return F.interpolate(tensor, size=size, mode="area" if zoom < 1 else "trilinear")
