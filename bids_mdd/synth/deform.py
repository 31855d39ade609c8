"""Random spatial transforms and intensity fields for synthetic subjects."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import zoom
from scipy.spatial.transform import Rotation


def centered_grid(fov_mm: tuple[float, float, float], resolution: float
                  ) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of a grid of ``resolution`` mm covering ``fov_mm``, centred on 0."""
    shape = tuple(int(round(f / resolution)) for f in fov_mm)
    affine = np.diag([resolution, resolution, resolution, 1.0])
    affine[:3, 3] = -resolution * (np.asarray(shape) - 1) / 2.0
    return shape, affine  # type: ignore[return-value]


def smooth_random_field(shape: tuple[int, ...], spacing_vox: float, sd: float,
                        rng: np.random.Generator, n_components: int = 1) -> np.ndarray:
    """A smooth random field: N(0, sd) values on a coarse lattice, cubic-interpolated to ``shape``.

    Returns float32 of shape ``(n_components, *shape)``.
    """
    coarse = tuple(max(2, int(np.ceil(s / spacing_vox)) + 1) for s in shape)
    out = np.empty((n_components, *shape), dtype=np.float32)
    for k in range(n_components):
        lattice = rng.normal(0.0, sd, size=coarse)
        factors = [s / c for s, c in zip(shape, coarse)]
        field = zoom(lattice, factors, order=3, mode="nearest", grid_mode=True)
        out[k] = field[tuple(slice(0, s) for s in shape)]
    return out


def rigid_matrix(rotation_deg: np.ndarray, translation_mm: np.ndarray) -> np.ndarray:
    """4 x 4 rigid transform from xyz Euler angles (degrees) and a translation (mm)."""
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    matrix[:3, 3] = translation_mm
    return matrix


def world_coordinates(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World (mm) coordinates of every voxel centre, float32 of shape (3, *shape)."""
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"))
    rot = affine[:3, :3].astype(np.float32)
    return np.einsum("ij,j...->i...", rot, ijk) + affine[:3, 3, None, None, None].astype(
        np.float32)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4 x 4 ``matrix`` to points of shape (3, ...); float32 result."""
    rot = matrix[:3, :3].astype(np.float32)
    shift = matrix[:3, 3].astype(np.float32).reshape((3,) + (1,) * (points.ndim - 1))
    return np.einsum("ij,j...->i...", rot, points) + shift
