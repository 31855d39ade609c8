"""``python -m bids_mdd.cli.brainlife [config.json]``: bids_mdd as a brainlife.io app.

A brainlife app reads its inputs from ``config.json`` in the working folder and writes its
outputs there, one folder per output datatype, with an optional ``product.json`` whose
``brainlife`` list the platform shows as messages. The input is one T1w file (datatype
``neuro/anat/t1w``), not a BIDS dataset, so this entry point makes a one-participant BIDS
dataset of it in a temporary folder, runs the participant level on it, and copies out:

- ``t1w/t1.nii.gz``: the bias-corrected, brain-masked T1w in MNI space (``neuro/anat/t1w``);
- ``gm/gm.nii.gz``: the smoothed, modulated GM map in MNI space (the classifier's input);
- ``predictions/predictions.json``: every model's prediction, with its spread, domain flag and
  model card summary;
- ``html/index.html`` and its figures: the participant report (datatype ``html``);
- ``derivatives/``: the whole BIDS-Derivatives output;
- ``product.json``: the QC flags and the predictions as brainlife messages, and both as data,
  with the participant's age, sex and diagnosis as given.

``config.json`` keys: ``t1`` (required, the T1w file), and optionally ``age``, ``sex`` and
``diagnosis`` (written to the dataset's participants.tsv and to product.json), ``models``
(bundle folders or a packaged set's name; default: the packaged ds002748 bundles), ``sloppy``
(tests only) and ``nprocs``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bids_mdd.bids.atomic import write_json
from bids_mdd.bids.names import sidecar_path
from bids_mdd.bids.outputs import T1wOutputs
from bids_mdd.cli import run as bids_app
from bids_mdd.cli.bootstrap import run_command
from bids_mdd.cli.parser import BidsAppArgumentParser
from bids_mdd.errors import BidsMddError, ExitCode

SUBJECT = "01"
#: The one-participant dataset's own description (a BIDS dataset made around one file).
DATASET_DESCRIPTION = {"Name": "brainlife.io input (one T1w)", "BIDSVersion": "1.10.0",
                       "DatasetType": "raw"}
PARTICIPANT_COLUMNS = ("age", "sex", "diagnosis")


def read_config(path: Path) -> dict[str, Any]:
    """``config.json``, checked: a readable object whose ``t1`` is an existing file."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BidsMddError(f"{path}: cannot read the brainlife config ({exc.strerror}); run "
                           "main in the folder holding config.json",
                           ExitCode.MISSING_INPUT) from exc
    except json.JSONDecodeError as exc:
        raise BidsMddError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})",
                           ExitCode.BAD_DATA) from exc
    if not isinstance(config, dict) or not config.get("t1"):
        raise BidsMddError(f"{path}: no \"t1\" key naming the T1w file (datatype "
                           "neuro/anat/t1w)", ExitCode.BAD_DATA)
    t1 = (path.parent / str(config["t1"])).resolve()
    if not t1.is_file():
        raise BidsMddError(f"{path}: \"t1\" is {config['t1']}, which is not a file",
                           ExitCode.MISSING_INPUT)
    return {**config, "t1": t1}


def make_dataset(config: dict[str, Any], root: Path) -> Path:
    """A one-participant BIDS dataset under ``root`` around the config's T1w."""
    anat = root / f"sub-{SUBJECT}" / "anat"
    anat.mkdir(parents=True)
    suffix = ".nii.gz" if config["t1"].name.endswith(".gz") else ".nii"
    shutil.copyfile(config["t1"], anat / f"sub-{SUBJECT}_T1w{suffix}")
    (root / "dataset_description.json").write_text(json.dumps(DATASET_DESCRIPTION))
    row = {"participant_id": f"sub-{SUBJECT}",
           **{key: config[key] for key in PARTICIPANT_COLUMNS if config.get(key) is not None}}
    pd.DataFrame([row]).to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def _messages(qc: dict[str, Any], predictions: pd.DataFrame,
              sidecar: dict[str, Any]) -> list[dict[str, str]]:
    """brainlife messages: each QC flag a warning, each prediction an info line, the
    predictions sidecar's own warning (synthetic models, out of distribution) a warning."""
    messages = [{"type": "warning", "msg": f"QC: {flag}"} for flag in qc.get("flags", [])]
    for row in predictions.itertuples():
        what = "P(MDD)" if row.target == "MDD" else str(row.target)
        messages.append({"type": "info",
                         "msg": f"{row.model}: {what} = {row.value:.3f} (SD {row.std:.3f} over "
                                f"{row.n_models} fold models; in distribution: "
                                f"{row.in_distribution})"})
    if sidecar.get("Warning"):
        messages.append({"type": "warning", "msg": str(sidecar["Warning"])})
    return messages


def write_outputs(out_dir: Path, outputs: T1wOutputs,
                  participant: dict[str, Any]) -> dict[str, Any]:
    """Copy the participant level's outputs into brainlife's layout; return product.json."""
    derivatives = out_dir / "derivatives"
    shutil.copytree(outputs.output_dir, derivatives, dirs_exist_ok=True)
    local = T1wOutputs(derivatives, outputs.entities)
    for folder, name, source in (("t1w", "t1.nii.gz", local.output("t1w_mni")),
                                 ("gm", "gm.nii.gz", local.output("gm_smoothed"))):
        (out_dir / folder).mkdir(exist_ok=True)
        shutil.copyfile(source, out_dir / folder / name)
    html = out_dir / "html"
    html.mkdir(exist_ok=True)
    shutil.copyfile(derivatives / f"sub-{SUBJECT}.html", html / "index.html")
    if (derivatives / "figures").is_dir():  # the report's images, at the paths it names
        shutil.copytree(derivatives / "figures", html / "figures", dirs_exist_ok=True)
    predictions = pd.read_csv(local.predictions, sep="\t", dtype={"in_distribution": str,
                                                                 "in_training": str})
    sidecar = json.loads(sidecar_path(local.predictions).read_text(encoding="utf-8"))
    models = {m["name"]: (m.get("card") or {}).get("summary") for m in sidecar["Models"]}
    # through pandas' JSON writer: an n/a (a bundle without a domain model) becomes null
    records = [{**row, "evidence": models.get(row["model"])}
               for row in json.loads(predictions.to_json(orient="records"))]
    (out_dir / "predictions").mkdir(exist_ok=True)
    write_json(out_dir / "predictions" / "predictions.json", records)
    qc = json.loads(local.output("qc").read_text(encoding="utf-8"))
    product = {"brainlife": _messages(qc, predictions, sidecar),
               "qc": {key: qc.get(key) for key in ("tiv_ml", "gm_fraction", "wm_fraction",
                                                   "csf_fraction", "template_ncc",
                                                   "template_mask_dice", "flags")},
               "predictions": records, "participant": participant}
    write_json(out_dir / "product.json", product)
    return product


def build_parser() -> BidsAppArgumentParser:
    parser = BidsAppArgumentParser(prog="python -m bids_mdd.cli.brainlife",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", type=Path, default=Path("config.json"),
                        help="brainlife's config.json (default: ./config.json)")
    parser.add_argument("--out-dir", type=Path, default=Path("."),
                        help="where the output datatypes go (default: the working folder)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app on config.json; return the participant level's exit code."""
    args = build_parser().parse_args(argv)

    def work() -> int:
        config = read_config(args.config.resolve())
        out_dir = args.out_dir.resolve()
        with tempfile.TemporaryDirectory(prefix="bids_mdd-brainlife-") as tmp:
            bids = make_dataset(config, Path(tmp) / "bids")
            output, work_dir = Path(tmp) / "out", Path(tmp) / "work"
            # the dataset is ours, made around one file: the BIDS validator would only judge
            # how the user spelt age and sex; the T1w itself still goes through every check
            command = [str(bids), str(output), "participant", "-w", str(work_dir),
                       "--nprocs", str(config.get("nprocs", 1)), "--skip-bids-validation"]
            models = config.get("models")
            if models:
                command += ["--models", *([models] if isinstance(models, str) else models)]
            if config.get("sloppy"):
                command.append("--sloppy")
            code = bids_app.main(command)
            if code not in (ExitCode.OK, ExitCode.QC_FAILED):
                return code
            participant = {key: config.get(key) for key in PARTICIPANT_COLUMNS}
            write_outputs(out_dir, T1wOutputs(output, {"subject": SUBJECT}), participant)
            return code

    return run_command("bids_mdd brainlife", work)


if __name__ == "__main__":
    sys.exit(main())
