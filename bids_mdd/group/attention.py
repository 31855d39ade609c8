"""Group attention maps: the mean of the participants' maps per target (paper B's factor
attention maps, o_k = (1/n) sum_i a_k,i), streamed one map at a time."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from nilearn.image import mean_img

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.spaces.grids import Grid

if TYPE_CHECKING:
    from bids_mdd.group.inputs import ParticipantFiles


def mapped_targets(files: Sequence[ParticipantFiles]) -> list[str]:
    """Every target some participant's complete predictions list or has a map of, in order:
    a target whose maps nobody has (all run with --no-attention) is still reported."""
    return list(dict.fromkeys(t for item in files for t in (*item.targets, *item.attention)))


def missing_maps_note(files: Sequence[ParticipantFiles], target: str) -> str | None:
    """Why participants whose predictions list ``target`` are not in its mean map (None: all
    are). A mean over fewer participants is never silent: the report and the log say it."""
    lacking = [item for item in files if target in item.targets and target not in item.attention]
    if not lacking:
        return None
    skipped = sum(item.attention_skipped for item in lacking)
    parts = []
    if skipped:
        parts.append(f"{skipped} participant{'s' if skipped > 1 else ''} "
                     f"{'have' if skipped > 1 else 'has'} no attention maps (run with "
                     "--no-attention)")
    if len(lacking) > skipped:
        others = len(lacking) - skipped
        names = [item.name for item in lacking if not item.attention_skipped]
        names = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        parts.append(f"{others} participant{'s' if others > 1 else ''} "
                     f"{'lack' if others > 1 else 'lacks'} the map although "
                     f"{'their' if others > 1 else 'its'} predictions list {target} ({names})")
    return f"{target}: " + "; ".join(parts)


def mean_map(paths: Sequence[Path], grid: Grid) -> nib.Nifti1Image:
    """Voxelwise mean of ``paths`` (float32), which must all lie on ``grid``.

    The grid is checked from the headers first: nilearn's ``mean_img``, which computes the
    mean one image at a time, would otherwise resample maps from another grid silently.
    Raises BidsMddError (65) naming a map off the grid, (66) when ``paths`` is empty.
    """
    if not paths:
        raise BidsMddError("no attention maps to average", ExitCode.MISSING_INPUT)
    for path in paths:
        image = nib.load(str(path))
        if not grid.holds(image):
            raise BidsMddError(f"{path}: not on the {grid.describe()} of its file name "
                               f"(shape {image.shape[:3]}); rerun the participant level",
                               ExitCode.BAD_DATA)
    mean = mean_img([str(p) for p in paths], copy_header=False)
    return nib.Nifti1Image(np.asarray(mean.dataobj, dtype=np.float32), grid.affine)
