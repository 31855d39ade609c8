"""Model bundles: a folder with ``model.json`` and one ``fold-<k>.safetensors`` per CV fold.

Weights are read with safetensors only (no pickle: a bundle from a stranger cannot run code),
and the sha256 of every weight file recorded in ``model.json`` is checked before it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from bids_mdd import __version__
from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.harmonize import HarmonizationError
from bids_mdd.models.card import ModelCard
from bids_mdd.models.domain import DOMAIN_FILE, DomainModel
from bids_mdd.models.harmonization import HARMONIZATION_FILE, BundleHarmonization
from bids_mdd.models.inputs import InputSpec
from bids_mdd.models.networks import build_network
from bids_mdd.models.task import Task
from bids_mdd.models.training_set import TrainingSet

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
#: model.json's entries that name a tensors file of the bundle, and that file's name.
_TENSOR_FILES = {"domain": DOMAIN_FILE, "harmonization": HARMONIZATION_FILE}

TASKS = tuple(Task)
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
#: A model.json is a few kB; a larger one is refused unread (no JSON bomb reaches the parser).
MAX_MODEL_JSON_BYTES = 1 << 20
_REQUIRED = ("format_version", "name", "architecture", "kwargs", "task", "outputs", "input",
             "folds")


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: where it is and what its ``model.json`` says."""

    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def task(self) -> Task:
        return Task(self.meta["task"])

    @property
    def outputs(self) -> list[str]:
        """Class names (negative first, positive last) or the regression target."""
        return list(self.meta["outputs"])

    @property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_json(self.meta["input"])

    @property
    def n_folds(self) -> int:
        return len(self.meta["folds"])

    @property
    def architecture(self) -> str:
        return str(self.meta["architecture"])

    @property
    def kwargs(self) -> dict[str, Any]:
        """The architecture's keyword arguments (a copy)."""
        return dict(self.meta["kwargs"])

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "unversioned"))

    @property
    def synthetic(self) -> bool:
        """Whether the bundle was trained on SYNTHETIC data."""
        return bool(self.meta.get("synthetic", False))

    @property
    def intended_use(self) -> str:
        return str(self.meta.get("intended_use", ""))

    @property
    def weights(self) -> dict[str, str]:
        """Each fold's weight file and its sha256."""
        return {fold["file"]: fold["sha256"] for fold in self.meta["folds"]}

    def target_scaling(self, index: int) -> tuple[float, float]:
        """Fold ``index``'s (mean, sd) of the training targets: a regressor's output times sd
        plus mean is in the target's units (a classifier's is (0, 1))."""
        scaling = self.meta["folds"][index].get("target_scaling") or {"mean": 0.0, "sd": 1.0}
        return float(scaling["mean"]), float(scaling["sd"])

    @property
    def card(self) -> ModelCard | None:
        """The model card (None for a bundle written before cards existed)."""
        data = self.meta.get("card")
        try:
            return ModelCard.from_json(data) if data else None
        except (KeyError, TypeError, ValueError) as exc:
            raise _fail(self.path / MODEL_JSON, f"card is malformed ({exc}); restore the "
                                                "bundle") from exc

    @property
    def training_set(self) -> TrainingSet | None:
        """What the bundle records of its training participants (None: nothing)."""
        return TrainingSet.from_meta(self.meta)

    def domain_model(self) -> DomainModel | None:
        """The training distribution's model for the domain-shift flag (None when the bundle
        has none); its sha256 was checked when the bundle loaded."""
        meta = self.meta.get("domain")
        if not meta:
            return None
        try:
            return DomainModel.load(self.path / meta["file"], meta)
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
            raise _fail(self.path / str(meta.get("file")), f"domain model unreadable ({exc}); "
                                                            "retrain the bundle") from exc

    def harmonization(self) -> BundleHarmonization | None:
        """The ComBat fit its inputs go through (None: trained on unharmonised inputs); its
        sha256 was checked when the bundle loaded."""
        meta = self.meta.get("harmonization")
        if not meta:
            return None
        try:
            return BundleHarmonization.load(self.path / meta["file"], meta)
        except (HarmonizationError, KeyError, TypeError) as exc:
            raise _fail(self.path / str(meta.get("file")), f"ComBat fit unreadable ({exc}); "
                                                            "retrain the bundle") from exc

    def network(self) -> nn.Module:
        """A freshly initialised network of the bundle's architecture."""
        try:
            return build_network(self.architecture, **self.kwargs)
        except (TypeError, ValueError) as exc:
            raise _fail(self.path / MODEL_JSON, f"architecture {self.architecture!r} "
                        f"with kwargs {self.kwargs!r} cannot be built ({exc}); "
                        "restore the bundle") from exc

    def load_fold(self, index: int, device: str | torch.device = "cpu") -> nn.Module:
        """Fold ``index`` (0-based) in eval mode; its sha256 was checked when the bundle loaded.

        Raises BidsMddError (65) for a file that is not safetensors, and for weights that do
        not fit the architecture model.json names.
        """
        weights = self.path / self.meta["folds"][index]["file"]
        net = self.network()
        try:
            state = load_file(str(weights), device=str(device))
        except (SafetensorError, OSError) as exc:
            why = " ".join(str(exc).split())[:120]
            raise _fail(weights, f"not a safetensors file ({why}); export the weights with "
                                 "bids_mdd-train or safetensors.torch.save_file") from exc
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = "; ".join(lines[1:3])[:160] or lines[0][:160]
            raise _fail(weights, f"weights do not fit architecture "
                                 f"{self.meta['architecture']!r} of {MODEL_JSON} ({why}); use the "
                                 "model.json they were trained with") from exc
        return net.to(device).eval()

    def ensemble(self, device: str | torch.device = "cpu") -> list[nn.Module]:
        return [self.load_fold(i, device) for i in range(self.n_folds)]


def _fail(path: Path, why: str) -> BidsMddError:
    return BidsMddError(f"{path}: {why}", ExitCode.BAD_DATA)


def load_bundle(path: str | Path) -> Bundle:
    """Read ``model.json``, validate it and check every weight file's sha256.

    Raises BidsMddError (66 when missing, 65 when invalid, tampered or pickle-based).
    """
    path = Path(path)
    meta_path = path / MODEL_JSON
    if not meta_path.is_file():
        pickles = sorted(p.name for p in path.glob("*") if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise _fail(path, f"holds pickle weights ({', '.join(pickles)}) and no {MODEL_JSON};"
                              " pickle files are refused: export the weights to safetensors")
        raise BidsMddError(f"{meta_path}: not found; --models must name bundle folders with a "
                           f"{MODEL_JSON}", ExitCode.MISSING_INPUT)
    size = meta_path.stat().st_size
    if size > MAX_MODEL_JSON_BYTES:
        raise _fail(meta_path, f"{size} bytes, larger than any model.json "
                               f"({MAX_MODEL_JSON_BYTES} at most); not a bids_mdd model bundle")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(meta_path, f"unreadable JSON ({exc}); restore the bundle") from exc
    if not isinstance(meta, dict):
        raise _fail(meta_path, "is not a JSON object; not a bids_mdd model bundle")
    missing = [key for key in _REQUIRED if key not in meta]
    if missing:
        raise _fail(meta_path, f"lacks {', '.join(missing)}; not a bids_mdd model bundle")
    folds = meta["folds"]
    if not isinstance(folds, list) or not all(
            isinstance(fold, dict) and isinstance(fold.get("file"), str)
            and isinstance(fold.get("sha256"), str) for fold in folds):
        raise _fail(meta_path, "folds must be a list of {\"file\", \"sha256\"} objects; "
                               "restore the bundle")
    if not isinstance(meta["kwargs"], dict):
        raise _fail(meta_path, "kwargs must be a JSON object; restore the bundle")
    if meta["format_version"] != FORMAT_VERSION:
        raise _fail(meta_path, f"format_version {meta['format_version']} is not supported by "
                               f"bids_mdd {__version__} (expects {FORMAT_VERSION})")
    if meta["task"] not in TASKS:
        raise _fail(meta_path, f"task {meta['task']!r} is not one of "
                               f"{', '.join(map(str, TASKS))}")
    if not meta["folds"]:
        raise _fail(meta_path, "lists no fold weights")
    tensor_files = []
    for key, name in _TENSOR_FILES.items():
        entry = meta.get(key)
        if entry is not None and not (isinstance(entry, dict) and entry.get("file") == name
                                      and isinstance(entry.get("sha256"), str)):
            raise _fail(meta_path, f"{key} must name {name} and its sha256; restore the bundle")
        tensor_files += [entry] if entry else []
    for fold in [*meta["folds"], *tensor_files]:
        weights = path / fold["file"]
        if weights.suffix != ".safetensors" or weights.parent != path:
            raise _fail(weights, "weights must be .safetensors files inside the bundle; pickle "
                                 "formats are refused")
        if not weights.is_file():
            raise BidsMddError(f"{weights}: weight file listed in {MODEL_JSON} is missing",
                               ExitCode.MISSING_INPUT)
        actual = sha256_of(weights)
        if actual != fold["sha256"]:
            raise _fail(weights, f"sha256 {actual[:12]}… differs from {fold['sha256'][:12]}… in "
                                 f"{MODEL_JSON}: the file was changed or corrupted")
    return Bundle(path=path, meta=meta)


def write_bundle(path: str | Path, meta: dict[str, Any],
                 fold_states: list[dict[str, torch.Tensor]], overwrite: bool = False,
                 fold_meta: list[dict[str, Any]] | None = None,
                 extra_files: dict[str, str] | None = None,
                 domain: DomainModel | None = None,
                 harmonization: BundleHarmonization | None = None) -> Bundle:
    """Write a bundle folder atomically (built beside ``path``, renamed into place).

    ``meta`` holds everything but ``format_version``, ``folds``, ``domain`` and
    ``harmonization``, which are filled in here (each fold entry extended by ``fold_meta``);
    ``extra_files`` (name -> text) are reports written beside ``model.json``; ``domain`` is the
    training distribution's model; ``harmonization`` the ComBat fit of the inputs.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise BidsMddError(f"{path}: a bundle exists there; choose another --out or pass "
                           "--overwrite", ExitCode.CANNOT_CREATE_OUTPUT)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        folds = []
        for index, state in enumerate(fold_states, start=1):
            name = f"fold-{index}.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()},
                      str(tmp / name), metadata={"bids_mdd_bundle": str(meta["name"])})
            extra = fold_meta[index - 1] if fold_meta else {}
            folds.append({**extra, "file": name, "sha256": sha256_of(tmp / name)})
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        full = {"format_version": FORMAT_VERSION, **meta, "folds": folds}
        for key, part in (("domain", domain), ("harmonization", harmonization)):
            if part is not None:
                part.save(tmp / _TENSOR_FILES[key])
                full[key] = {**part.to_json(), "sha256": sha256_of(tmp / _TENSOR_FILES[key])}
        (tmp / MODEL_JSON).write_text(json.dumps(full, indent=2, sort_keys=True, default=str)
                                      + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return load_bundle(path)


def find_bundles(models_dir: str | Path) -> list[Bundle]:
    """Every bundle directly in ``models_dir`` (or ``models_dir`` itself if it is one)."""
    models_dir = Path(models_dir)
    if (models_dir / MODEL_JSON).is_file():
        return [load_bundle(models_dir)]
    if not models_dir.is_dir():
        raise BidsMddError(f"{models_dir}: --models must be a bundle folder or a folder of "
                           "bundles", ExitCode.MISSING_INPUT)
    found = sorted(p.parent for p in models_dir.glob(f"*/{MODEL_JSON}"))
    if not found:
        raise BidsMddError(f"{models_dir}: holds no model bundle (no */{MODEL_JSON})",
                           ExitCode.MISSING_INPUT)
    return [load_bundle(p) for p in found]
