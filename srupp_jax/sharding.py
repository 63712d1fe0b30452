"""Data parallelism over a device mesh, one or many hosts (ARCHITECTURE.md, "Scale").

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

    Covers SLURM (srun) and TPU pods, which jax.distributed.initialize() detects itself, and
    explicit settings: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, which this function reads (jax itself reads only the address). On CPU the
    collectives between processes go through gloo. A single process does nothing.
    """
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
    multi = (int(os.environ.get("SLURM_NTASKS", "1")) > 1 or explicit
             or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0)
    if not multi or jax.distributed.is_initialized():
        return
    kwargs = {}
    if explicit:
        for name, key in (("JAX_NUM_PROCESSES", "num_processes"),
                          ("JAX_PROCESS_ID", "process_id")):
            value = os.environ.get(name, "")
            if not value.isdigit():
                raise ValueError(f"JAX_COORDINATOR_ADDRESS is set, so {name} must be a "
                                 f"non-negative integer, got {name}={value!r}")
            kwargs[key] = int(value)
        if not kwargs["process_id"] < kwargs["num_processes"]:
            raise ValueError(f"JAX_PROCESS_ID={kwargs['process_id']}; expected < "
                             f"JAX_NUM_PROCESSES={kwargs['num_processes']}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")   # CPU devices only
    jax.distributed.initialize(**kwargs)
    logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


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


def batch_shardings(mesh: Mesh, tree):
    """Shardings for a batch-first tree (a task's carry, a batch): every array's leading axis
    over "data", the rest replicated."""
    return jax.tree.map(lambda a: batch_sharding(mesh, a.ndim), tree)


def onto_mesh(tree, mesh: Mesh):
    """`tree` with every array that is not already laid out on `mesh` replicated over it (RNG
    state, step counters, optimizer scalars, restored values). With several processes a jitted
    step accepts only arrays laid out over the whole mesh; the values must be the same on every
    process, as they are when every process computed them the same way."""
    def one(x):
        if isinstance(x, jax.Array) and getattr(x.sharding, "mesh", None) == mesh:
            return x
        if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
            return jax.random.wrap_key_data(one(jax.random.key_data(x)),
                                            impl=jax.random.key_impl(x))
        value = np.asarray(x)   # device_put cannot target other processes' devices
        return jax.make_array_from_callback(value.shape, replicated(mesh),
                                            lambda index: value[index])

    return jax.tree.map(one, tree)


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
