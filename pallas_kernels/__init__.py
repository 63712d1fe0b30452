"""Pallas kernels. Each kernel has a pure-JAX reference it is tested against."""
