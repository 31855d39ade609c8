"""Preprocessing: nipype workflows over antspyx steps, QC metrics and figures."""
