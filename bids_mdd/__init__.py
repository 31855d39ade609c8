"""bids_mdd: a BIDS App for deep-learning analysis of major depressive disorder from T1w MRI."""

from bids_mdd._version import __version__

__all__ = ["__version__"]
