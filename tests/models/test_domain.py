"""The domain-shift model: calibrated on held-out inputs, it flags about the calibration rate of
new inputs from the training distribution, flags inputs of another kind, and survives its
file."""

from __future__ import annotations

import numpy as np
import pytest

from bids_mdd.models.domain import DomainModel, fit_calibrated

pytestmark = pytest.mark.unit  # make test-fast


def _cohort(rng: np.random.Generator, base: np.ndarray, n: int, spread: float = 0.3
            ) -> np.ndarray:
    """``n`` inputs: one pattern, a shared axis of variation and voxel noise (SYNTHETIC)."""
    axis = np.sin(np.linspace(0, 6, base.size)).reshape(base.shape)
    return (base + rng.normal(0, 1, (n, 1, 1, 1)) * axis
            + spread * rng.normal(size=(n, *base.shape))).astype(np.float32)


def _splits(n: int, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    tests = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), test), test) for test in tests]


@pytest.mark.parametrize("n", [24, 72])
def test_new_inputs_of_the_training_distribution_are_flagged_at_about_the_calibration_rate(
        n) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(16, 16, 16))
    model = fit_calibrated(_cohort(rng, base, n), _splits(n, 5), factor=0.5)
    assert model.calibration["n_heldout"] == n
    assert model.calibration["heldout_fraction_flagged"] <= 0.05
    new = model.distances(_cohort(rng, base, 400))
    assert np.mean(new > model.threshold) <= 0.05  # measured 0.0-0.01
    # the held-out distances describe new inputs: medians within 10 % of each other
    assert np.median(new) == pytest.approx(model.calibration["heldout_median"], rel=0.1)


def test_inputs_of_another_kind_lie_outside() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(size=(16, 16, 16))
    model = fit_calibrated(_cohort(rng, base, 40), _splits(40, 5), factor=0.5)
    other_pattern = _cohort(rng, rng.normal(size=base.shape), 10)
    assert (model.distances(other_pattern) > 2 * model.threshold).all()
    noisier = _cohort(rng, base, 10, spread=0.6)
    assert (model.distances(noisier) > model.threshold).all()


def test_saved_and_loaded_model_gives_the_same_distances(tmp_path) -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(12, 14, 12))
    volumes = _cohort(rng, base, 30)
    model = fit_calibrated(volumes, _splits(30, 3), factor=0.5)
    model.save(tmp_path / "domain.safetensors")
    loaded = DomainModel.load(tmp_path / "domain.safetensors", model.to_json())
    probe = _cohort(rng, base, 5)
    assert np.allclose(loaded.distances(probe), model.distances(probe), rtol=1e-4)
    assert loaded.threshold == model.threshold and loaded.quantile == 0.99


def test_a_synthetic_subject_is_out_of_distribution_for_the_real_data_bundles(
        tmp_path) -> None:
    """The packaged ds002748 bundles' domain models against SYNTHETIC subjects rendered in MNI
    space (GM map and T1w): every one lies beyond every bundle's threshold, while the bundles'
    own held-out ds002748 inputs were flagged at about the calibration rate."""
    from bids_mdd.models.bundle import find_bundles
    from bids_mdd.models.inference import packaged_models_dir
    from bids_mdd.models.inputs import load_input
    from bids_mdd.synth.cohort import generate_cohort
    from bids_mdd.synth.mni import MNI_DIR
    from bids_mdd.synth.model import CohortSpec
    from bids_mdd.training.data import find_samples

    generate_cohort(tmp_path, CohortSpec(n_mdd=1, n_hc=1, seed=5, resolution=4.0,
                                         skull_stripped=True, mni_derivatives=True), n_jobs=1)
    bundles = find_bundles(packaged_models_dir("ds002748"))
    assert {b.task for b in bundles} == {"classification", "regression"} and len(bundles) == 4
    for bundle in bundles:
        domain = bundle.domain_model()
        assert domain.calibration["n_heldout"] >= 63  # RRS-sum: 63 of the 72 have it
        assert domain.calibration["heldout_fraction_flagged"] <= 0.05
        spec = bundle.input_spec
        paths = [s.path for s in find_samples(tmp_path / MNI_DIR, spec)]
        assert len(paths) == 2
        distances = domain.distances(np.stack([load_input(p, spec) for p in paths]))
        assert (distances > domain.threshold).all(), (bundle.name, distances, domain.threshold)
