"""Corpus folders -> clip manifests: one module per corpus's naming scheme, then validation and probing."""
