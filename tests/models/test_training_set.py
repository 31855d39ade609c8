"""Whether a bundle was trained on a participant: by the input image's hash, or by the label
inside the bundle's own dataset (its DOI, any version), never by a label alone."""

from __future__ import annotations

import numpy as np
import pytest

from bids_mdd.models.bundle import load_bundle
from bids_mdd.models.inference import packaged_models_dir
from bids_mdd.models.training_set import TrainingSet, dataset_key, image_sha256, label_sha256

pytestmark = pytest.mark.unit  # make test-fast

DS002748 = "10.18112/openneuro.ds002748.v1.0.5"


@pytest.mark.parametrize("doi", ["10.18112/openneuro.ds002748.v1.0.5",
                                 "10.18112/openneuro.ds002748.v1.0.4",
                                 "https://doi.org/10.18112/OpenNeuro.ds002748.v2.0.0",
                                 "doi:10.18112/openneuro.ds002748"])
def test_a_doi_is_compared_without_resolver_or_version(doi) -> None:
    assert dataset_key(doi) == "10.18112/openneuro.ds002748"


@pytest.mark.parametrize("doi", [None, "", "  "])
def test_no_doi_is_no_dataset(doi) -> None:
    assert dataset_key(doi) is None


def test_the_default_classifier_knows_its_72_participants_only_in_ds002748() -> None:
    bundle = load_bundle(packaged_models_dir("ds002748") / "ds002748-densenet121")
    recorded = bundle.training_set
    assert recorded is not None and recorded.cohort_doi == DS002748
    assert len(recorded.participants_sha256) == 72 == len(recorded.images_sha256)
    other_image = image_sha256(np.zeros((2, 2, 2), np.float32))
    assert recorded.contains("02", other_image, "10.18112/openneuro.ds002748.v1.0.4")
    assert recorded.contains("sub-72", other_image, DS002748)
    assert not recorded.contains("73", other_image, DS002748)  # ds002748 has sub-01..sub-72
    assert not recorded.contains("02", other_image, "10.18112/openneuro.ds000030.v1.0.0")
    assert not recorded.contains("02", other_image, None)
    trained_image = sorted(recorded.images_sha256)[0]  # its own image, whatever the label
    assert recorded.contains("anyone", trained_image, None)


def test_a_bundle_without_fingerprint_cannot_tell() -> None:
    assert TrainingSet.from_meta({"name": "old"}) is None
    unknown_cohort = TrainingSet.from_meta({"data_fingerprint": {
        "participants_sha256": [label_sha256("01")], "images_sha256": []}})
    assert not unknown_cohort.contains("01", "0" * 64, DS002748)
