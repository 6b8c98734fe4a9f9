"""How the Langevin sampler (`langevin`) runs on concrete arrays: as compiled programs.

`langevin.sample` is traced code for the caller's jit. `sample` here is the entry point
for concrete arrays: it runs compiled programs itself, one for the whole sampler
(`langevin.sample` jitted), or on CPU when the sampler is longer than a chunk
(`runs_on_host`) a Python loop over one compiled chunk of unrolled steps: no while loop
(XLA:CPU runs convolutions inside one several times slower than straight-line code,
jax#12868), and compile time bounded by the chunk. Every layout composes the same pieces
(`langevin.start`, `langevin.units`, `langevin.finish`) and computes the same numbers.

Networks passed as `jax.tree_util.Partial(module.apply, variables)` (`langevin.nets`)
are pytrees: their variables are arguments of the programs (not constants), so one
compilation serves every call with the same module and shapes. Other callables are
static arguments (compiled once per callable object).
"""

import functools
from typing import Any, Callable, List, Optional, Tuple, Union

import jax
import jax.numpy as jnp

from hat_ebm_jax import langevin

Array = jax.Array
SettingsLike = langevin.SettingsLike


def _split_net(f):
  """-> (dynamic part, static part): a `Partial` is passed as a pytree argument."""
  if isinstance(f, jax.tree_util.Partial):
    return f, None
  return None, f


def _net(dyn, static):
  return dyn if static is None else static


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _jit_whole(st, chunk, ebm_s, gen_s, ebm_d, gen_d, z, y, key):
  return langevin.sample(_net(ebm_d, ebm_s), _net(gen_d, gen_s), z, y, key, st,
                         unroll=chunk)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_start(st, ebm_s, gen_s, ebm_d, gen_d, z, y, key):
  return langevin.start(st, _net(ebm_d, ebm_s), _net(gen_d, gen_s), z, y, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _jit_units(st, n, ebm_s, gen_s, ebm_d, gen_d, carry, const, chunk_keys):
  return langevin.units(st, _net(ebm_d, ebm_s), _net(gen_d, gen_s), carry, const,
                        chunk_keys, n)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_finish(st, ebm_s, gen_s, ebm_d, gen_d, carry, const, images_init, keys):
  return langevin.finish(st, _net(ebm_d, ebm_s), _net(gen_d, gen_s), carry, const,
                         images_init, keys)


def _host_loop_plan(st: langevin.Settings, chunk: int) -> List[Tuple[int, int]]:
  """[(first unit, units)] of the host loop: chunks of `chunk`, then the remainder one
  unit at a time. At most two programs to compile, and the second is the cheapest (a
  one-step program compiles in a tenth of a 10-step chunk's time; with Winograd convs a
  9-step remainder chunk of the joint sampler took as long to compile as the chunk)."""
  plan, i = [], 0
  while i < st.num_units:
    n = chunk if st.num_units - i >= chunk else 1
    plan.append((i, n))
    i += n
  return plan


def _sample_host_loop(st: langevin.Settings, chunk: int, ebm, gen, z, y, key
                      ) -> langevin.LangevinResult:
  """A Python loop over a jitted program of `chunk` unrolled units (plus a one-unit
  program for the remainder). One straight-line program of hundreds of steps takes
  minutes to compile; this does not, and has no while loop."""
  (ebm_d, ebm_s), (gen_d, gen_s) = _split_net(ebm), _split_net(gen)
  keys, carry, const, images_init = _jit_start(st, ebm_s, gen_s, ebm_d, gen_d, z, y, key)
  for i, n in _host_loop_plan(st, chunk):
    carry = _jit_units(st, n, ebm_s, gen_s, ebm_d, gen_d, carry, const,
                       langevin.unit_keys(st, keys, i, n))
  return _jit_finish(st, ebm_s, gen_s, ebm_d, gen_d, carry, const, images_init, keys)


def _uses_host_loop(st: langevin.Settings, chunk: int,
                    backend: Optional[str] = None) -> bool:
  return (backend or jax.default_backend()) == 'cpu' and chunk < st.num_units


def runs_on_host(settings: SettingsLike, unroll: Union[str, int, bool, None] = None,
                 backend: Optional[str] = None) -> bool:
  """Whether `sample` drives the steps from a Python loop (CPU, and a sampler longer
  than one chunk). Traced inside a caller's jit the same sampler would be a while loop,
  several times slower on CPU: such a caller should run the sampler outside its jit
  (train.py does, with the modes' `langevin_step(..., concrete=True)`)."""
  st = langevin.Settings.from_config(settings)
  return _uses_host_loop(st, st.chunk_size(unroll, backend), backend)


def sample(ebm_apply: Callable[[Array], Array], gen_apply: Callable[[Array], Array],
           z: Array, y: Array, key: Array, settings: SettingsLike,
           unroll: Union[str, int, bool, None] = None,
           backend: Optional[str] = None) -> langevin.LangevinResult:
  """`langevin.sample` on concrete arrays, run as compiled programs (same arguments).

  One program for the whole sampler, except on CPU when the sampler is longer than a
  chunk (`runs_on_host`), where a Python loop drives a compiled chunk of unrolled steps.
  Pass networks as `langevin.nets(module, variables)` so that the programs compile once
  per module and shape. Every layout computes the numbers `langevin.sample` traced
  inside a jit computes. Do not call this under a transformation: trace
  `langevin.sample` there.
  """
  st = langevin.Settings.from_config(settings)
  chunk = st.chunk_size(unroll, backend)
  z = jnp.asarray(z, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if _uses_host_loop(st, chunk, backend):
    return _sample_host_loop(st, chunk, ebm_apply, gen_apply, z, y, key)
  (ebm_d, ebm_s), (gen_d, gen_s) = _split_net(ebm_apply), _split_net(gen_apply)
  return _jit_whole(st, chunk, ebm_s, gen_s, ebm_d, gen_d, z, y, key)


def lower(ebm_apply: Callable[[Array], Array], gen_apply: Callable[[Array], Array],
          z: Array, y: Array, key: Array, settings: SettingsLike,
          unroll: Union[str, int, bool, None] = None) -> List[Tuple[str, Any, int]]:
  """The XLA programs `sample` runs for these concrete arguments, lowered, not compiled.

  Returns `[(name, jax.stages.Lowered, calls per sample)]`: one program (`whole`), or on
  CPU for long samplers the host loop's `start`, `chunk<k>` (and `unit` for the
  remainder), `finish`. For compile-time and FLOP accounting (benchmarks/langevin.py):
  `sum(calls * lowered.compile().cost_analysis()['flops'])` is one run's work.
  """
  st = langevin.Settings.from_config(settings)
  chunk = st.chunk_size(unroll)
  z = jnp.asarray(z, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  (ebm_d, ebm_s), (gen_d, gen_s) = _split_net(ebm_apply), _split_net(gen_apply)
  if not _uses_host_loop(st, chunk):
    return [('whole', _jit_whole.lower(st, chunk, ebm_s, gen_s, ebm_d, gen_d, z, y, key),
             1)]
  start = _jit_start.lower(st, ebm_s, gen_s, ebm_d, gen_d, z, y, key)
  keys, carry, const, images_init = start.out_info
  out = [('start', start, 1)]
  counts = {}
  for _, n in _host_loop_plan(st, chunk):
    counts[n] = counts.get(n, 0) + 1
  for n, calls in sorted(counts.items(), reverse=True):
    width = n + st.keys_per_unit - 1
    chunk_keys = jax.ShapeDtypeStruct((width,) + keys.shape[1:], keys.dtype)
    out.append((f'chunk{n}' if n > 1 else 'unit',
                _jit_units.lower(st, n, ebm_s, gen_s, ebm_d, gen_d, carry, const,
                                 chunk_keys), calls))
  out.append(('finish', _jit_finish.lower(st, ebm_s, gen_s, ebm_d, gen_d, carry, const,
                                          images_init, keys), 1))
  return out
