"""Synthetic BIDS cohorts with planted MDD grey-matter effects (SYNTHETIC data, labelled so)."""
