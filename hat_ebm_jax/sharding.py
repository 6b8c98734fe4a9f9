"""Data parallelism: one `jax.jit` program over a device `Mesh` with `NamedSharding`.

The mesh has one axis, `data`, over every device of every process (`jax.devices()`, so
a TPU pod slice, several GPU nodes or `N` CPU processes form one mesh). What lives where:

* data batches `[B, ...]`: split along `data`; each process feeds its own
  `B / processes` rows (`host_to_global`);
* Langevin states `z`, `y` and the images made from them: split along `data`
  (`constrain_batch` in the modes);
* the persistent bank `(z, x)` of synthesis: split along `data`; it is one global bank
  and its indices are drawn over all of it; its rows are read and written shard by
  shard (`gather_rows`, `set_rows`), so a step moves about `B` rows per device whatever
  the bank size and device count;
* params, optimizer states, EMA, batch stats, frozen nets, step, rng: replicated.

Everything a step computes is then the same on any number of devices (up to float
summation order): random numbers are drawn with `jax_threefry_partitionable` (set by
`configure_jax`), so a key gives the same array however it is split, and the bank is
global rather than one slice per replica as in the original.

The step functions are `jax.jit` with explicit `in_shardings`/`out_shardings` (see
`train.py`), called inside `use_mesh(mesh)`, so that `constrain_batch` inside the modes
can pin the chains to the `data` axis without the modes knowing the mesh. On one device
every constraint is a no-op.

Adding a `model` axis (for the 2048-wide ImageNet nets when a replica no longer fits one
chip): build the mesh in `create_mesh` as `Mesh(devices.reshape(n_data, n_model),
('data', 'model'))`; keep batches and chains on `P('data')`; give parameters, their Adam
moments and EMA a sharding per leaf in `state_shardings` (e.g. conv kernels
`[kh, kw, in, out]` on their output channels, `P(None, None, None, 'model')`, dense
kernels `P(None, 'model')`, biases and scales `P('model')`). XLA inserts the all-gathers
and reduce-scatters. `state_shardings` and `create_mesh` are the only places that
change; checkpoints restore into any mesh because orbax reshards on load.
"""

import contextlib
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def configure_jax() -> None:
  """Process-wide settings every entry point (train, evaluate, main) needs.

  `jax_threefry_partitionable`: random numbers do not depend on how an array is sharded
  (the default since jax 0.5; set explicitly so results never depend on the device count).
  """
  jax.config.update('jax_threefry_partitionable', True)


def create_mesh(devices=None) -> Mesh:
  """A 1D mesh `('data',)` over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_size(mesh: Mesh) -> int:
  """Number of devices along `data`."""
  return int(mesh.shape[DATA_AXIS])


def check_batch_divides(batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  """Raises ValueError unless the global batch splits evenly over devices and hosts."""
  n_dev = data_size(mesh)
  n_proc = jax.process_count()
  if batch_size % n_dev or batch_size % n_proc:
    good = max(n_dev, batch_size // n_dev * n_dev)
    raise ValueError(
        f'config.{what}={batch_size} does not divide over the {n_dev} devices of '
        f'{n_proc} process(es): each device must get the same number of examples. Use a '
        f'multiple of {n_dev} (e.g. --config.{what}={good}).')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`."""
  return NamedSharding(mesh, P(DATA_AXIS))


def sample_sharding(n: int, mesh: Mesh) -> NamedSharding:
  """For `n` samples: split along `data` when `n` divides over it, else replicated."""
  return batch_sharded(mesh) if n % data_size(mesh) == 0 else replicated(mesh)


def state_shardings(state: Any, mesh: Mesh, sharded_fields=('bank',)) -> Any:
  """Shardings for a train state: `bank` split along its leading axis, rest replicated."""
  rep, shard = replicated(mesh), batch_sharded(mesh)

  def for_field(name, value):
    s = shard if name in sharded_fields else rep
    return jax.tree_util.tree_map(lambda _: s, value)

  return state.replace(**{f: for_field(f, getattr(state, f))
                          for f in state.__dataclass_fields__})


def use_mesh(mesh: Optional[Mesh]):
  """Context in which jitted steps trace with `mesh` as the ambient mesh.

  `constrain_batch` reads it, so modes can shard their chains without holding the mesh.
  """
  if mesh is None:
    return contextlib.nullcontext()
  return jax.set_mesh(mesh)


def jit(fn, mesh: Mesh, **jit_kwargs):
  """`jax.jit(fn, **jit_kwargs)` that traces and runs inside `use_mesh(mesh)`.

  Pass explicit `in_shardings`/`out_shardings`; the ambient mesh lets `constrain_batch`
  in the modes shard the chains. `.lower(*args)` lowers under the mesh too.
  """
  jitted = jax.jit(fn, **jit_kwargs)

  @functools.wraps(fn)
  def call(*args):
    with use_mesh(mesh):
      return jitted(*args)

  def lower(*args):
    with use_mesh(mesh):
      return jitted.lower(*args)

  call.lower = lower
  return call


def _ambient_data_size() -> int:
  """Size of the `data` axis of the mesh in context (0 when there is none)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty or DATA_AXIS not in mesh.axis_names:
    return 0
  return int(mesh.shape[DATA_AXIS])


def constrain_batch(tree: Any) -> Any:
  """Pins the leading (batch/chain) axis of every array in `tree` to `data`.

  Inside a jitted step traced under `use_mesh`, this keeps the Langevin chains (and
  everything computed from them) split over devices instead of letting XLA replicate
  them. A no-op without an ambient mesh, on one device, and for arrays whose leading
  dimension does not divide over `data`.
  """
  n = _ambient_data_size()
  if n <= 1:
    return tree

  def pin(x):
    if getattr(x, 'ndim', 0) == 0 or x.shape[0] % n:
      return x
    return jax.lax.with_sharding_constraint(x, P(DATA_AXIS))

  return jax.tree_util.tree_map(pin, tree)


def _shard_map(f, in_specs, out_specs):
  """`jax.shard_map` over the ambient mesh."""
  return jax.shard_map(f, mesh=jax.sharding.get_abstract_mesh(), in_specs=in_specs,
                       out_specs=out_specs)


def _owned(idx: jax.Array, rows_per_device: int):
  """Global row indices -> (local index, whether this device holds the row)."""
  local = idx - jax.lax.axis_index(DATA_AXIS) * rows_per_device
  own = (local >= 0) & (local < rows_per_device)
  return local, own


def _rows_shard(tree: Any, idx: jax.Array) -> bool:
  """Whether `gather_rows`/`set_rows` can work shard by shard: an ambient mesh with
  several devices along `data`, and row and index counts that divide over it."""
  n = _ambient_data_size()
  return n > 1 and idx.shape[0] % n == 0 and all(
      x.shape[0] % n == 0 for x in jax.tree_util.tree_leaves(tree))


def gather_rows(tree: Any, idx: jax.Array) -> Any:
  """`tree_map(lambda a: a[idx], tree)` for arrays `[N, ...]` split along `data`, with
  indices `idx [B]` (replicated, distinct) drawn over all `N` rows -> `[B, ...]` split
  along `data`. The values are those of global indexing: each is a sum of itself and
  zeros (only a `-0.0` comes back as `0.0`).

  Each device picks, for all `B` indices, the rows it holds (zeros elsewhere), and a
  reduce-scatter over `data` sums the `D` partial results and hands each device its
  `B / D` rows. Per device that moves about `B` rows a step, whatever `N` and `D`.
  (Summed as float: XLA:TPU runs an integer reduce-scatter as a whole all-reduce.)
  Plain indexing without a mesh or on one device.
  """
  if not _rows_shard(tree, idx):
    return constrain_batch(jax.tree_util.tree_map(lambda a: a[idx], tree))
  leaves, treedef = jax.tree_util.tree_flatten(tree)

  def local(idx, *rows):
    out = []
    for r in rows:
      loc, own = _owned(idx, r.shape[0])
      picked = r[jnp.where(own, loc, 0)]
      if picked.dtype == jnp.bool_:  # marks summed as float too (0 and 1, exact)
        picked = picked.astype(jnp.float32)
      picked = jnp.where(own.reshape((-1,) + (1,) * (r.ndim - 1)), picked,
                         jnp.zeros((), picked.dtype))
      summed = jax.lax.psum_scatter(picked, DATA_AXIS, scatter_dimension=0, tiled=True)
      out.append(summed.astype(r.dtype))
    return tuple(out)

  fn = _shard_map(local, in_specs=(P(),) + (P(DATA_AXIS),) * len(leaves),
                  out_specs=(P(DATA_AXIS),) * len(leaves))
  return jax.tree_util.tree_unflatten(treedef, fn(idx, *leaves))


def set_rows(tree: Any, idx: jax.Array, values: Any) -> Any:
  """`tree_map(lambda a, v: a.at[idx].set(v), tree, values)` for arrays `[N, ...]`
  split along `data`, distinct indices `idx [B]` (replicated) and `values [B, ...]`
  split along `data`: the `B` new rows are all-gathered and each device writes the ones
  it holds. Per device about `B` rows a step, whatever `N` and `D`. Plain indexing
  without a mesh or on one device."""
  if not _rows_shard(tree, idx):
    return jax.tree_util.tree_map(lambda a, v: a.at[idx].set(v), tree, values)
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  vals = treedef.flatten_up_to(values)

  def local(idx, *args):
    rows, new = args[:len(leaves)], args[len(leaves):]
    out = []
    for r, v in zip(rows, new):
      loc, own = _owned(idx, r.shape[0])
      v = jax.lax.all_gather(v, DATA_AXIS, axis=0, tiled=True)
      out.append(r.at[jnp.where(own, loc, r.shape[0])].set(v, mode='drop'))
    return tuple(out)

  spec = (P(DATA_AXIS),) * len(leaves)
  fn = _shard_map(local, in_specs=(P(),) + spec + spec, out_specs=spec)
  return jax.tree_util.tree_unflatten(treedef, fn(idx, *leaves, *vals))


def host_to_global(local_batch: np.ndarray, mesh: Mesh) -> jax.Array:
  """This process's `[B / processes, ...]` batch -> a global `[B, ...]` array.

  Each process passes the rows of its own share (`input_pipeline.create_iterator` with
  this `process_index`/`process_count`); process `i`'s rows land on its own devices.
  """
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local_batch)


def to_host(x: Any) -> Any:
  """A (possibly sharded, multi-process) pytree of arrays as numpy on every host.

  Collective when an array spans several processes: every process must call it.
  """
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  def fetch(a):
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)

  return jax.tree_util.tree_map(fetch, x)


def sync(name: str) -> None:
  """A barrier across processes (nothing on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)
