"""Experiment configs (ml_collections), one file per paper setting."""
