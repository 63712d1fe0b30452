"""Data pipelines: contiguous language-model streams (`streams`)."""
