"""Experiment configs (ml_collections), one file per paper setting, layered on `base.py`.

Installed, this folder is the package `srupp_jax.configs` (in a checkout `srupp_jax/configs` is a
link to it), so the files import each other as `from srupp_jax.configs import base` and the
`srupp` command finds them by name (`--config=enwik8:k5`).
"""
