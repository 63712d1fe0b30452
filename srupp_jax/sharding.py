"""Data parallelism over a device mesh, one or many hosts (DESIGN section 4).

The mesh has one axis, "data", over every device of every host. Streams (the batch dimension)
and the carried state are sharded over it; parameters and optimizer state are replicated, or
sharded along their largest divisible axis when FSDP is on. Each host feeds only its own
streams: `global_batch` assembles the global array from the per-host blocks.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def initialize_distributed() -> None:
    """Start multi-host JAX when the environment describes several processes.

    Covers SLURM (srun), TPU pods and explicit settings (JAX_COORDINATOR_ADDRESS,
    JAX_NUM_PROCESSES, JAX_PROCESS_ID); jax.distributed.initialize() reads them itself.
    A single process (the usual case on one machine) does nothing.
    """
    multi = (int(os.environ.get("SLURM_NTASKS", "1")) > 1
             or "JAX_COORDINATOR_ADDRESS" in os.environ
             or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0)
    if multi and not jax.distributed.is_initialized():
        jax.distributed.initialize()
        logging.info("jax.distributed: process %d of %d", jax.process_index(),
                     jax.process_count())


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh ("data",) over the first `num_devices` devices (all by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={num_devices}; expected 1..{len(devices)}")
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (stream) axis over "data", the rest replicated."""
    return NamedSharding(mesh, P(AXIS, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def carry_shardings(mesh: Mesh, carry):
    """Shardings for an LMState: c [layers, B, d] on axis 1, memory [B, M, d] and
    memory_pad [B, M] on axis 0."""
    from srupp_jax.models import LMState
    mem = lambda m: None if m is None else batch_sharding(mesh, m.ndim)
    return LMState(NamedSharding(mesh, P(None, AXIS, None)),
                   tuple(mem(m) for m in carry.memory), batch_sharding(mesh, 2))


def param_shardings(mesh: Mesh, tree, fsdp: bool = False):
    """Replicated, or (FSDP) each array split along its largest axis divisible by the mesh."""
    n = mesh.devices.size

    def one(x):
        if not fsdp or getattr(x, "ndim", 0) == 0:
            return replicated(mesh)
        axes = [i for i in np.argsort(x.shape)[::-1] if x.shape[i] % n == 0]
        if not axes:
            return replicated(mesh)
        spec = [None] * x.ndim
        spec[axes[0]] = AXIS
        return NamedSharding(mesh, P(*spec))

    return jax.tree.map(one, tree)


def global_batch(local: np.ndarray, mesh: Mesh) -> jax.Array:
    """This host's streams [B_local, ...] -> the global array [B_local * processes, ...]."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh, local.ndim), local)
