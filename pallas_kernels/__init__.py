"""Pallas kernels. Each kernel has a pure-JAX reference it is tested against."""
from pallas_kernels.sru_recurrence import sru_recurrence_pallas

__all__ = ["sru_recurrence_pallas"]
