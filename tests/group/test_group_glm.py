"""The voxelwise group GLM: design coding, exact OLS against a reference, chunking invariance,
a planted MDD effect found by FDR (and a null cohort that finds nothing), BH on known p-values,
the error paths and nilearn permutation inference."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nilearn.image import mean_img
from scipy import ndimage, stats

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.group.glm import (
    contrast_vector,
    design_matrix,
    fdr_mask,
    fit_glm,
    permutation_inference,
)
from bids_mdd.spaces.grids import CLASSIFIER_GRID, Grid

pytestmark = pytest.mark.unit  # make test-fast

#: A small grid for most tests (same zoom as the classifier grid, 16 128 voxels).
SMALL = Grid(shape=(24, 28, 24), zoom=1.5, origin=(-18.0, -21.0, -18.0), res="test")
#: Inside SMALL: the GM region (mean GM 0.5; 0.05 elsewhere) and the planted block in it.
BRAIN = (slice(3, 21), slice(3, 25), slice(3, 21))  # 18 x 22 x 18 = 7128 voxels
BLOCK = (slice(5, 17), slice(6, 18), slice(5, 17))  # 12 x 12 x 12 = 1728 voxels (24 %)
NOISE_SD = 0.05


def write_maps(folder: Path, volumes: list[np.ndarray], grid: Grid) -> list[Path]:
    """Each volume as float32 ``sub-XX_gm.nii.gz`` on ``grid``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, volume in enumerate(volumes):
        path = folder / f"sub-{i:02d}_gm.nii.gz"
        nib.save(grid.image(volume.astype(np.float32)), path)
        paths.append(path)
    return paths


def mean_mask(paths: list[Path], threshold: float = 0.2) -> np.ndarray:
    """Voxels whose mean map value is >= ``threshold`` (nilearn's mean; the reference for the
    GM mask :func:`fit_glm` finds in its one pass with ``min_mean``)."""
    mean = mean_img([str(p) for p in paths], copy_header=True)
    return np.asarray(mean.dataobj) >= threshold


def region(grid: Grid, index: tuple[slice, ...]) -> np.ndarray:
    """Boolean mask of ``index`` on ``grid``."""
    mask = np.zeros(grid.shape, dtype=bool)
    mask[index] = True
    return mask


def cohort(folder: Path, n_hc: int, n_mdd: int, effect_d: float, seed: int,
           ) -> tuple[list[Path], pd.DataFrame]:
    """GM maps on SMALL: 0.5 in BRAIN (0.05 outside) + an age slope + iid noise (SD NOISE_SD),
    minus ``effect_d`` x NOISE_SD in BLOCK for MDD; and their participants table."""
    rng = np.random.default_rng(seed)
    n = n_hc + n_mdd
    table = pd.DataFrame({"mdd": [0] * n_hc + [1] * n_mdd,
                          "age": rng.uniform(20, 60, n).round(1),
                          "sex": rng.choice(["F", "M"], n)})
    brain, block = region(SMALL, BRAIN), region(SMALL, BLOCK)
    volumes = []
    for row in table.itertuples():
        gm = np.where(brain, 0.5 - 0.001 * (row.age - 40), 0.05)
        gm = gm + NOISE_SD * rng.standard_normal(SMALL.shape)
        volumes.append(gm - effect_d * NOISE_SD * row.mdd * block)
    return write_maps(folder, volumes, SMALL), table


def test_design_matrix_codes_group_centres_numbers_and_dummies_categories():
    table = pd.DataFrame({"mdd": [1, 0, 1, 0, 1, 0], "age": [20.0, 30, 40, 50, 60, 70],
                          "sex": ["M", "F", "F", "M", "F", "M"],
                          "site": ["b", "a", "c", "a", "b", "c"]})
    design, names = design_matrix(table, "mdd", ["age", "sex", "site"])
    assert names == ["intercept", "mdd", "age", "sex[M]", "site[b]", "site[c]"]
    np.testing.assert_array_equal(design[:, 0], 1.0)
    np.testing.assert_array_equal(design[:, 1], [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(design[:, 2], [-25, -15, -5, 5, 15, 25])
    np.testing.assert_array_equal(design[:, 3], [1, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(design[:, 4:], [[1, 0], [0, 0], [0, 1], [0, 0], [1, 0],
                                                  [0, 1]])
    np.testing.assert_array_equal(contrast_vector(names, "mdd"), [0, 1, 0, 0, 0, 0])


def test_design_errors_name_the_column_with_exit_code_65():
    table = pd.DataFrame({"mdd": [1, 0, 1, 0, 1], "age": [30.0, np.nan, 40, 50, 20],
                          "sex": ["M", "M", "F", "F", "M"]}, index=["p1", "p2", "p3", "p4", "p5"])
    with pytest.raises(BidsMddError, match=r"column 'age' has 1 missing value\(s\) \(rows p2\)"
                       ) as error:
        design_matrix(table, "mdd", ["age"])
    assert error.value.exit_code == ExitCode.BAD_DATA == 65
    table["twin"] = table["mdd"] * 2.0  # a copy of the group indicator
    with pytest.raises(BidsMddError, match="rank-deficient: column 'twin'") as error:
        design_matrix(table, "mdd", ["sex", "twin"])
    assert error.value.exit_code == 65
    with pytest.raises(BidsMddError, match="group column 'sex' must be coded 1 = MDD, 0 = HC"):
        design_matrix(table, "sex", [])
    with pytest.raises(BidsMddError, match="no column 'site'") as error:
        design_matrix(table, "mdd", ["site"])
    assert error.value.exit_code == 65


def test_t_and_p_equal_an_independent_ols_reference(tmp_path):
    paths, table = cohort(tmp_path, 12, 12, effect_d=1.0, seed=1)
    design, names = design_matrix(table, "mdd", ["age", "sex"])
    mask = mean_mask(paths)
    assert mask.sum() == region(SMALL, BRAIN).sum()  # 0.5 inside, 0.05 outside
    result = fit_glm(paths, design, mask, contrast_vector(names, "mdd"), grid=SMALL)
    assert result.df == 24 - 4
    data = np.stack([np.asarray(nib.load(p).dataobj, dtype=np.float64)[mask] for p in paths])

    # every voxel against numpy's least squares on the raw (unshifted, un-centred) data
    beta, rss, rank, _ = np.linalg.lstsq(design, data, rcond=None)
    assert rank == 4
    se = np.sqrt(rss / result.df * np.linalg.inv(design.T @ design)[1, 1])
    np.testing.assert_allclose(result.effect, beta[1], rtol=1e-9)
    np.testing.assert_allclose(result.t, beta[1] / se, rtol=1e-9)
    np.testing.assert_allclose(result.p, 2 * stats.t.sf(np.abs(beta[1] / se), result.df),
                               rtol=1e-9)
    # and a few voxels against statsmodels (with age and sex as pandas columns it codes itself)
    sm = pytest.importorskip("statsmodels.formula.api")
    block = region(SMALL, BLOCK)[mask]
    voxels = list(np.flatnonzero(block)[:5]) + list(np.flatnonzero(~block)[:5])
    for v in voxels:
        fit = sm.ols("gm ~ mdd + age + C(sex)", table.assign(gm=data[:, v])).fit()
        assert result.t[v] == pytest.approx(fit.tvalues["mdd"], rel=1e-6)
        assert result.p[v] == pytest.approx(fit.pvalues["mdd"], rel=1e-6)
        assert result.effect[v] == pytest.approx(fit.params["mdd"], rel=1e-6)


def test_chunk_size_does_not_change_t_on_the_classifier_grid(tmp_path):
    """Real 121 x 145 x 121 grid; a constant slab checks the zero-variance guard."""
    rng = np.random.default_rng(2)
    core = (slice(40, 80), slice(50, 95), slice(40, 80))
    slab = (slice(40, 80), slice(50, 95), slice(40, 42))
    volumes = []
    for _ in range(7):
        gm = np.zeros(CLASSIFIER_GRID.shape, np.float32)
        gm[core] = 0.6 + 0.05 * rng.standard_normal(gm[core].shape)
        gm[slab] = 0.4
        volumes.append(gm)
    paths = write_maps(tmp_path, volumes, CLASSIFIER_GRID)
    design = np.column_stack([np.ones(7), [0, 1, 0, 1, 0, 1, 1], rng.normal(size=7)])
    mask = mean_mask(paths)
    assert mask.sum() == 40 * 45 * 40
    small, large = (fit_glm(paths, design, mask, np.array([0, 1.0, 0]), chunk_size=k)
                    for k in (3, 1000))
    # the same sums in another order: equal to rounding (measured: |dt| <= 9e-13)
    np.testing.assert_allclose(small.t, large.t, rtol=0, atol=1e-10)
    np.testing.assert_allclose(small.p, large.p, rtol=0, atol=1e-10)
    constant = region(CLASSIFIER_GRID, slab)[mask]
    assert (small.t[constant] == 0).all() and (small.p[constant] == 1).all()
    assert np.isfinite(small.t).all() and (small.t[~constant] != 0).all()
    volume = small.to_grid(small.t)
    assert volume.shape == CLASSIFIER_GRID.shape and (volume[~mask] == 0).all()
    np.testing.assert_array_equal(volume[mask], small.t)
    # one pass (the mean GM accumulated with the GLM) = the mean mask (nilearn) + a GLM over it
    one_pass = fit_glm(paths, design, None, np.array([0, 1.0, 0]), chunk_size=3, min_mean=0.2)
    np.testing.assert_array_equal(one_pass.mask, mask)
    np.testing.assert_allclose(one_pass.t, small.t, rtol=0, atol=1e-10)
    np.testing.assert_allclose(one_pass.effect, small.effect, rtol=0, atol=1e-12)
    with pytest.raises(BidsMddError, match="group mask is empty"):
        fit_glm(paths, design, None, np.array([0, 1.0, 0]), min_mean=0.9)


def fdr_counts(result, block: np.ndarray, q: float = 0.05) -> tuple[float, float, int]:
    """(fraction of the block found, fraction of findings outside it, number found)."""
    found = fdr_mask(result.p, q)
    outside = found & ~block
    return found[block].mean(), outside.sum() / max(found.sum(), 1), int(found.sum())


def test_fdr_finds_a_planted_block_and_nothing_in_a_null_cohort(tmp_path):
    """Issue 6's design: 30 HC + 30 MDD, d = 1.0 (the block is 24 % of the mask; the block's
    expected t is 1.0 x sqrt(15) = 3.9, above BH's threshold of about 3.2). Seeds 3-8: 87-90 %
    of the block found, 3.4-4.2 % of the findings outside it."""
    paths, table = cohort(tmp_path / "effect", 30, 30, effect_d=1.0, seed=3)
    design, names = design_matrix(table, "mdd", ["age", "sex"])
    mask = mean_mask(paths)
    result = fit_glm(paths, design, mask, contrast_vector(names, "mdd"), chunk_size=7,
                     grid=SMALL)
    block = region(SMALL, BLOCK)[mask]
    covered, outside, found = fdr_counts(result, block)
    print(f"planted: {covered:.3f} of the block found, {outside:.4f} of {found} findings "
          "outside it")
    assert covered >= 0.80 and outside <= 0.05
    assert (result.t[fdr_mask(result.p, 0.05) & block] < 0).all()  # lower GM in MDD

    paths, table = cohort(tmp_path / "null", 30, 30, effect_d=0.0, seed=4)
    design, names = design_matrix(table, "mdd", ["age", "sex"])
    null = fit_glm(paths, design, mask, contrast_vector(names, "mdd"), grid=SMALL)
    print(f"null: {int(fdr_mask(null.p, 0.05).sum())} FDR findings")
    assert fdr_mask(null.p, 0.05).sum() <= 3


def test_benjamini_hochberg_on_known_p_values():
    p = np.array([0.042, 0.001, 0.216, 0.039, 0.008, 0.06, 0.205, 0.041, 0.074, 0.212])
    # sorted thresholds 0.005 k: only 0.001 <= 0.005 and 0.008 <= 0.010 pass
    np.testing.assert_array_equal(fdr_mask(p, 0.05), p <= 0.008)
    # step-up: 0.011 > 0.01 is still rejected because 0.04 <= 4/5 x 0.05
    p = np.array([0.9, 0.04, 0.011, 0.013, 0.012])
    np.testing.assert_array_equal(fdr_mask(p, 0.05), [False, True, True, True, True])
    np.testing.assert_array_equal(fdr_mask(p, 0.01), [False] * 5)
    assert fdr_mask(np.array([]), 0.05).shape == (0,)


def test_map_off_the_grid_is_named_with_exit_code_65(tmp_path):
    good = write_maps(tmp_path / "good", [np.full(CLASSIFIER_GRID.shape, 0.5)] * 3,
                      CLASSIFIER_GRID)
    small = write_maps(tmp_path / "small", [np.full(SMALL.shape, 0.5)], SMALL)[0]
    shifted = Grid(CLASSIFIER_GRID.shape, 1.5, (-91.5, -126.0, -72.0), "1p5")
    moved = write_maps(tmp_path / "moved", [np.full(shifted.shape, 0.5)], shifted)[0]
    design = np.column_stack([np.ones(4), [0, 1, 0, 1], [1.0, 2, 4, 3]])
    mask = np.zeros(CLASSIFIER_GRID.shape, bool)
    mask[60, 70, 60] = True
    for bad in (small, moved):
        for call in (lambda bad=bad: fit_glm(good + [bad], design, None, np.array([0, 1.0, 0]),
                                             min_mean=0.2),
                     lambda bad=bad: fit_glm(good + [bad], design, mask,
                                             np.array([0, 1.0, 0]))):
            with pytest.raises(BidsMddError, match=f"{bad}: shape .* not on the res-1p5 grid "
                                                   r"\(121, 145, 121\) at 1.5 mm") as error:
                call()
            assert error.value.exit_code == 65


def test_permutation_inference_makes_the_planted_block_most_significant(tmp_path):
    """TFCE and cluster mass spread support to neighbours of the block, so a noise voxel next to
    it may be significant too; none is further away, and the maximum lies in the block."""
    grid = Grid(shape=(12, 14, 12), zoom=1.5, origin=(-9.0, -10.0, -9.0), res="tiny")
    block = region(grid, (slice(3, 7), slice(4, 8), slice(3, 7)))
    rng = np.random.default_rng(5)
    group = np.array([0] * 10 + [1] * 10)
    volumes = [0.5 + NOISE_SD * rng.standard_normal(grid.shape) - 2 * NOISE_SD * g * block
               for g in group]
    paths = write_maps(tmp_path, volumes, grid)
    design = np.column_stack([np.ones(20), group])
    mask = np.ones(grid.shape, bool)
    for tfce in (True, False):
        logp = permutation_inference(paths, design, mask, n_permutations=50, tfce=tfce,
                                     seed=0, grid=grid)
        assert logp.shape == grid.shape and np.isfinite(logp).all()
        print(f"tfce={tfce}: block mean {logp[block].mean():.2f}, outside max "
              f"{logp[~block].max():.2f} ({int((logp[~block] >= 1.3).sum())} voxels >= 1.3), "
              f"max {logp.max():.2f}")
        # the smallest p of 50 permutations: 1/51 (TFCE), 1/50 (cluster mass, nilearn's null_to_p)
        assert logp[block].max() == logp.max() >= -np.log10(1 / 50)
        assert np.median(logp[block]) >= -np.log10(0.05)
        assert (logp[~ndimage.binary_dilation(block)] < -np.log10(0.05)).all()
