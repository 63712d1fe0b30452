"""Models trained elsewhere, into srupp_jax: the PyTorch `sru` package's modules
(torch_sru.py) and the paper's released language models (released.py: the layout read off
the tensors, the params; --mode=import).

    from srupp_jax.convert import from_torch_srupp, from_torch_sru, load_torch_srupp
"""
from srupp_jax.convert.torch_sru import from_torch_sru, from_torch_srupp, load_torch_srupp

__all__ = ["from_torch_srupp", "from_torch_sru", "load_torch_srupp"]
