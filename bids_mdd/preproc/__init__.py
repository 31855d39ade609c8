"""Preprocessing: templates and grids, nipype workflows, QC."""
