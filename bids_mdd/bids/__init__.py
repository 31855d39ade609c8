"""BIDS input discovery and BIDS-Derivatives output (names, descriptions, atomic writes)."""
