"""Pallas kernels. Each kernel has a pure-JAX reference it is tested against. This package
imports nothing from srupp_jax (tests/test_structure.py)."""
from pallas_kernels.sru_recurrence import KernelOptions, sru_recurrence_pallas
from pallas_kernels.sru_recurrence_tpu import sru_recurrence_tpu
from pallas_kernels.tpu_options import TPUKernelOptions

__all__ = ["KernelOptions", "TPUKernelOptions", "sru_recurrence_pallas", "sru_recurrence_tpu"]
