"""The device mesh, one or many hosts (README, "8 GPUs, several hosts, TPU"): the one module
that knows its layout.

`mesh.fsdp_size` 0 or 1: a 1-D mesh ("data",) over every device (or the first
`mesh.num_devices`); parameters and optimizer state are replicated, or with `mesh.fsdp`
sharded over "data" along their largest axis divisible by the device count.
`mesh.fsdp_size` k > 1: a 2-D mesh ("data", "fsdp") of n/k x k devices (n the devices in
use); parameters and optimizer state are sharded over "fsdp" along their largest axis
divisible by k and replicated over "data" (mesh.fsdp is implied).

Either way the batch dimension (streams, sentence rows) and the carried state, which is
batch-first, are sharded over every device, each row on one device (on the 2-D mesh over
("data", "fsdp") together). Both meshes take the devices in `jax.devices()` order (by process,
then id), so each host's devices hold a contiguous block of rows, the same rows on either
mesh (a run may resume with another mesh.fsdp_size and keep each stream's carry). Each host
feeds only its own rows: `global_batch` assembles the global array from the per-host blocks.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"
FSDP = "fsdp"


def initialize_distributed() -> None:
    """Start multi-host JAX when the environment describes several processes.

    Covers SLURM (srun) and TPU pods on GKE (TPU_WORKER_HOSTNAMES), which
    jax.distributed.initialize() detects itself; SRUPP_JAX_DISTRIBUTED=1 asks for it anywhere
    else it can detect its peers (a Cloud TPU VM pod slice, through the metadata server); and
    explicit settings: JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID, which this function reads (jax itself reads only the address). On CPU the
    collectives between processes go through gloo. A single process does nothing.
    """
    explicit = "JAX_COORDINATOR_ADDRESS" in os.environ
    multi = (int(os.environ.get("SLURM_NTASKS", "1")) > 1 or explicit
             or os.environ.get("TPU_WORKER_HOSTNAMES", "").count(",") > 0
             or os.environ.get("SRUPP_JAX_DISTRIBUTED") == "1")
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


def make_mesh(num_devices: int | None = None, fsdp_size: int = 0) -> Mesh:
    """The mesh of the first `num_devices` devices (all by default): 1-D ("data",) for
    fsdp_size 0 or 1, else 2-D ("data", "fsdp") of shape (n / fsdp_size, fsdp_size)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"mesh.num_devices={num_devices}; expected 0 (all) or "
                         f"1..{len(devices)}")
    if fsdp_size < 0 or n % max(fsdp_size, 1):
        raise ValueError(f"mesh.fsdp_size={fsdp_size} does not divide the {n} devices in use "
                         f"(mesh.num_devices={num_devices or 0}); expected 0 or 1 (no fsdp "
                         f"axis) or a divisor of {n}")
    if fsdp_size <= 1:
        return Mesh(np.asarray(devices[:n]), (AXIS,))
    return Mesh(np.asarray(devices[:n]).reshape(n // fsdp_size, fsdp_size), (AXIS, FSDP))


def from_config(mesh_config) -> Mesh:
    """The mesh a config's `mesh` section asks for (num_devices, fsdp_size)."""
    return make_mesh(mesh_config.num_devices or None, mesh_config.fsdp_size)


def batch_axes(mesh: Mesh):
    """The mesh axes the batch dimension is split over: "data", or ("data", "fsdp")."""
    return mesh.axis_names if len(mesh.axis_names) > 1 else mesh.axis_names[0]


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (row) axis over every device (`batch_axes`), the rest replicated."""
    return NamedSharding(mesh, P(batch_axes(mesh), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_shardings(mesh: Mesh, tree):
    """Shardings for a batch-first tree (a task's carry, a batch): every array's leading axis
    over every device (`batch_axes`), the rest replicated."""
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


def param_axis(mesh: Mesh, fsdp: bool = False) -> str | None:
    """The mesh axis parameters are sharded over: "fsdp" on a 2-D mesh, "data" on a 1-D mesh
    with `fsdp`, else None (replicated)."""
    return FSDP if FSDP in mesh.axis_names else (AXIS if fsdp else None)


def param_shardings(mesh: Mesh, tree, fsdp: bool = False):
    """Each array split over `param_axis` along its largest axis divisible by that axis'
    size (replicated over the other axis, and where no axis divides)."""
    axis = param_axis(mesh, fsdp)
    n = mesh.shape[axis] if axis else 1

    def one(x):
        if axis is None or getattr(x, "ndim", 0) == 0:
            return replicated(mesh)
        axes = [i for i in np.argsort(x.shape)[::-1] if x.shape[i] % n == 0]
        if not axes:
            return replicated(mesh)
        spec = [None] * x.ndim
        spec[axes[0]] = axis
        return NamedSharding(mesh, P(*spec))

    return jax.tree.map(one, tree)


def global_batch(local: np.ndarray, mesh: Mesh) -> jax.Array:
    """This host's rows [B_local, ...] -> the global array [B_local * processes, ...], rows
    over every device (`batch_sharding`)."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh, local.ndim), local)
