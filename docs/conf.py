"""Sphinx configuration of the bids_mdd documentation (``make docs``; offline)."""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))

from bids_mdd._version import __version__  # noqa: E402  (after the path set-up above)

project = "bids_mdd"
author = "the bids_mdd developers"
copyright = "the bids_mdd developers, Apache-2.0"
release = version = __version__

extensions = ["myst_parser", "sphinxarg.ext", "bids_mdd_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "results/paper_tables_ds002748"]
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]
smartquotes = False  # commands and messages are shown as typed
highlight_language = "text"  # unlabelled blocks are commands, trees and messages

html_theme = "furo"
html_title = f"bids_mdd {__version__}"
html_static_path: list[str] = []
# no network at build time: nothing may be fetched (intersphinx, remote images)
intersphinx_mapping: dict[str, tuple[str, None]] = {}
