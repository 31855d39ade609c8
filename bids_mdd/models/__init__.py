"""Networks, model bundles and attention maps."""
