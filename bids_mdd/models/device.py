"""Choosing the torch device from ``--device {auto,cpu,cuda}``."""

from __future__ import annotations

import torch

from bids_mdd.errors import BidsMddError, ExitCode


def resolve_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without one: exit 64."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise BidsMddError("--device cuda: no CUDA device is available", ExitCode.USAGE)
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice
