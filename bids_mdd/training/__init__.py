"""Datasets, splits, training loop, cross-validation, transfer, baselines, tables."""
