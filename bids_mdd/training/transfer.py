"""Transfer learning (paper A's "ADNI-Transfer"): start from a bundle trained on a source
dataset, give the network a new head, and refuse target data the source has seen."""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import nn

from bids_mdd.errors import BidsMddError, ExitCode
from bids_mdd.models.bundle import Bundle
from bids_mdd.models.networks import replace_head

LOGGER = logging.getLogger(__name__)


def check_no_shared_data(source: Bundle, target: dict[str, list[str]],
                         allow_shared_ids: bool = False) -> None:
    """Raise when the target's images (or participant labels) were in the source's training
    data, as recorded in the source bundle's ``data_fingerprint``.

    Shared labels alone may be a coincidence (two datasets both counting sub-001 ...):
    ``allow_shared_ids`` then downgrades them to a warning; shared images always refuse.
    """
    recorded = source.training_set
    if recorded is None:
        raise BidsMddError(f"{source.path}: the bundle records no training-data fingerprint, so "
                           "leakage into the target cannot be ruled out", ExitCode.USAGE)
    images = recorded.images_sha256 & set(target["images_sha256"])
    if images:
        raise BidsMddError(f"{len(images)} target image(s) were in the training data of "
                           f"{source.path}: source and target must not share participants",
                           ExitCode.USAGE)
    ids = recorded.participants_sha256 & set(target["participants_sha256"])
    if ids and not allow_shared_ids:
        raise BidsMddError(f"{len(ids)} target participant label(s) are also in the training data "
                           f"of {source.path}; if these are different people (another dataset's "
                           "numbering), pass --allow-shared-ids", ExitCode.USAGE)
    if ids:
        LOGGER.warning("%d participant labels are shared with the source data; allowed by "
                       "--allow-shared-ids (no shared images)", len(ids))


def transfer_factory(source: Bundle, n_outputs: int, fold: int = 0) -> Callable[[], nn.Module]:
    """A factory of the source network (fold ``fold``'s weights) with a new ``n_outputs`` head."""
    architecture = source.architecture

    def make() -> nn.Module:
        net = source.load_fold(fold)
        return replace_head(net, architecture, n_outputs).train()

    return make
