"""Data parallelism: one `jax.jit` program over a device `Mesh` with `NamedSharding`.

The mesh has one axis, `data`, over every device of every process. Batches, Langevin
states and the persistent bank are split along it; parameters, optimizer states and EMA
are replicated. A `model` axis for the 2048-wide ImageNet nets would be a second mesh
axis with conv kernels sharded on their output channels (`P(None, None, None, 'model')`);
`state_shardings` is the one place that would change.
"""

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def create_mesh(devices=None) -> Mesh:
  """A 1D mesh `('data',)` over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def check_batch_divides(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  """Raises ValueError unless the global batch splits evenly over devices and hosts."""
  n_dev = mesh.devices.size
  n_proc = jax.process_count()
  if batch_size % n_dev or batch_size % n_proc:
    raise ValueError(
        f'config.{what}={batch_size} does not divide over {n_dev} devices in {n_proc} '
        f'process(es). Use a multiple of {n_dev} (e.g. --config.{what}='
        f'{max(n_dev, batch_size // n_dev * n_dev)}).')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def state_shardings(state: Any, mesh: Mesh, sharded_fields=('bank',)) -> Any:
  """Shardings for a train state: `bank` split along its leading axis, rest replicated."""
  rep, shard = replicated(mesh), batch_sharded(mesh)

  def for_field(name, value):
    s = shard if name in sharded_fields else rep
    return jax.tree_util.tree_map(lambda _: s, value)

  return state.replace(**{f: for_field(f, getattr(state, f))
                          for f in state.__dataclass_fields__})


def host_to_global(local_batch: np.ndarray, mesh: Mesh) -> jax.Array:
  """This process's `[B / processes, ...]` batch -> a global `[B, ...]` array."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local_batch)


def to_host(x: Any) -> Any:
  """A (possibly sharded, multi-process) pytree of arrays as numpy on every host."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def fetch(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)

  return jax.tree_util.tree_map(fetch, x)
