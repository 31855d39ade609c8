"""BIDS-Derivatives output: dataset_description.json, provenance sidecars and image writing."""

from __future__ import annotations

import json
import os
import platform
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib

from bids_mdd import __version__
from bids_mdd.bids.atomic import atomic_output, atomic_outputs, json_text, write_json, write_text
from bids_mdd.bids.names import sidecar_path
from bids_mdd.errors import BidsMddError, ExitCode

PIPELINE_NAME = "bids_mdd"
BIDS_VERSION = "1.10.0"
CODE_URL = "https://github.com/bids-mdd/bids_mdd"
#: podman writes this file into every container it runs (docker's /.dockerenv is no evidence: it
#: is left on hosts that once ran a build, and bids_mdd outside any image would claim one).
PODMAN_MARKER = Path("/run/.containerenv")
#: BIDS URIs of input files name the input dataset ``raw`` (``DatasetLinks``).
RAW_URI_PREFIX = "bids:raw:"
#: Outputs BIDS (1.10) has no names for, so that the BIDS validator skips them: reports and
#: figures, logs, transforms (BEP014), QC metrics, predictions, attention maps, and the group
#: level (statistical maps are BEP041, not in the specification yet). Folders without a trailing
#: slash: bids-validator-deno 3 reports the folder itself for "figures/".
BIDSIGNORE = ("*.html", "figures", "logs", "group", "*_xfm.*", "*_metrics.*",
              "*_predictions.*", "*_attention.*")


def container_info() -> dict[str, str] | None:
    """Describe the container bids_mdd runs in (BIDS ``GeneratedBy.Container``), if any.

    Only markers that prove it: ``BIDS_MDD_CONTAINER_TYPE``/``..._TAG``, which the Dockerfile and
    singularity.def set; Apptainer's own ``APPTAINER_CONTAINER`` (set inside every container
    it runs; it also names the runtime when our Docker image is run by Apptainer); podman's
    ``/run/.containerenv``. Never ``/.dockerenv`` alone.
    """
    kind = os.environ.get("BIDS_MDD_CONTAINER_TYPE")
    if os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"):
        kind = "singularity"
    elif kind is None and PODMAN_MARKER.exists():
        kind = "podman"
    if kind is None:
        return None
    tag = os.environ.get("BIDS_MDD_CONTAINER_TAG", f"bids_mdd/bids_mdd:{__version__}")
    return {"Type": kind, "Tag": tag}


def generated_by() -> dict[str, Any]:
    """The ``GeneratedBy`` entry of this bids_mdd (name, version, code URL, container)."""
    entry: dict[str, Any] = {"Name": PIPELINE_NAME, "Version": __version__, "CodeURL": CODE_URL}
    container = container_info()
    if container is not None:
        entry["Container"] = container
    return entry


def source_dataset_entry(bids_dir: str | Path) -> dict[str, str]:
    """A ``SourceDatasets`` entry for an input BIDS dataset (URL, and DOI/version if known)."""
    bids_dir = Path(bids_dir).resolve()
    entry = {"URL": bids_dir.as_uri()}
    description = bids_dir / "dataset_description.json"
    if description.is_file():
        try:
            source = json.loads(description.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            source = {}
        if source.get("DatasetDOI"):
            entry["DOI"] = str(source["DatasetDOI"])
        if source.get("Name"):
            entry["Name"] = str(source["Name"])
    return entry


def dataset_description(source_dirs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """The dataset_description.json content of a bids_mdd derivatives dataset."""
    description: dict[str, Any] = {
        "Name": "bids_mdd outputs",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated_by()],
        "HowToAcknowledge": "Cite bids_mdd and the two papers its models come from (its "
                            "documentation's page 'How to cite').",
    }
    if source_dirs:
        description["SourceDatasets"] = [source_dataset_entry(d) for d in source_dirs]
        description["DatasetLinks"] = {"raw": description["SourceDatasets"][0]["URL"]}
    return description


def write_dataset_description(output_dir: str | Path,
                              source_dirs: Sequence[str | Path] = ()) -> Path:
    """Atomically write OUTPUT_DIR/dataset_description.json, its README and .bidsignore.

    Safe under concurrent participant jobs: every job writes the same content with one rename.
    An existing description from another pipeline is never overwritten.
    """
    path = Path(output_dir) / "dataset_description.json"
    if path.is_file():
        try:
            existing = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            existing = {}
        names = [g.get("Name") for g in existing.get("GeneratedBy", []) if isinstance(g, dict)]
        if names and PIPELINE_NAME not in names:
            raise BidsMddError(
                f"{path} belongs to another pipeline ({', '.join(map(str, names))}); "
                "choose an empty OUTPUT_DIR for bids_mdd",
                ExitCode.CANNOT_CREATE_OUTPUT,
            )
    write_text(path.with_name(".bidsignore"),
               "# bids_mdd outputs BIDS has no names for\n" + "\n".join(BIDSIGNORE) + "\n")
    write_text(path.with_name("README"),
               f"Outputs of bids_mdd {__version__} ({CODE_URL}): per participant, preprocessed "
               "T1w images, tissue maps and model inputs in MNI152NLin2009cAsym space, model "
               "predictions and attention maps, with an HTML report; group/ holds the group "
               "level. .bidsignore lists what BIDS has no names for.\n")
    return write_json(path, dataset_description(source_dirs))


def provenance(sources: Sequence[str | Path] = (), parameters: Mapping[str, Any] | None = None,
               software: Mapping[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    """A sidecar dictionary saying what made a file: software, sources and parameters."""
    sidecar: dict[str, Any] = {
        "GeneratedBy": [generated_by()],
        "SoftwareVersions": software_versions_text({
            "bids_mdd": __version__, "python": platform.python_version(),
            "nibabel": nib.__version__, **(software or {})}),
        "Sources": [str(s) for s in sources],
    }
    if parameters:
        sidecar["Parameters"] = dict(parameters)
    sidecar.update(extra)
    return sidecar


def software_versions_text(versions: Mapping[str, str]) -> str:
    """BIDS' ``SoftwareVersions`` is a string: "name version, name version, ..."."""
    return ", ".join(f"{name} {number}" for name, number in versions.items())


def write_file(path: str | Path, write: Callable[[Path], object],
               sidecar: Mapping[str, Any] | None = None) -> Path:
    """Write the file via ``write`` and its JSON sidecar (if any) to temporary files, then
    rename the file and then the sidecar: a failed write (a full disk) leaves neither, and a
    sidecar never describes a file that is not there."""
    path = Path(path)
    if sidecar is None:
        with atomic_output(path) as tmp:
            write(tmp)
        return path
    with atomic_outputs(path, sidecar_path(path)) as (tmp, tmp_sidecar):
        write(tmp)
        tmp_sidecar.write_text(json_text(dict(sidecar)), encoding="utf-8")
    return path


def copy_file(source: str | Path, path: str | Path,
              sidecar: Mapping[str, Any] | None = None) -> Path:
    """Atomically copy a non-image output (a transform, a figure) and write its sidecar."""
    return write_file(path, lambda tmp: shutil.copyfile(source, tmp), sidecar)


def write_image(path: str | Path, image: nib.spatialimages.SpatialImage,
                sidecar: Mapping[str, Any] | None = None) -> Path:
    """Atomically write a NIfTI image and, when given, its JSON sidecar (see write_file)."""
    return write_file(path, lambda tmp: nib.save(image, tmp), sidecar)
