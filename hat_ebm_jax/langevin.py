"""The Langevin sampler of Hat EBM (SPEC §3) as one pure, jit-compatible function.

```
images_init = G(z) + y
repeat mcmc_steps times:
  if update_latents:
    g_z = d/dz sum_batch H(G(z) + y) / T
    z   = z - (e_z^2 / 2) g_z  [+ e_z * N(0, I) if use_noise]
  g_y = d/dy [sum_batch H(G(z) + y) / T + tau_res * sum y^2]        (new z)
  clip each sample's g_y to L2 norm max_langevin_norm_res / (e^2 / 2)  (if clipping)
  y   = y - (e^2 / 2) g_y  [+ e * N(0, I) if use_noise]
```

The loop length is static. How it is laid out for the compiler is the `unroll` setting
(`resolve_unroll`: steps per unrolled chunk) and where `sample` is called:

* traced (inside the caller's jit, e.g. a training step): the steps are inlined, fully
  unrolled, or as a `lax.scan` over unrolled chunks; `'auto'` unrolls chunks of 10 steps on
  CPU (XLA:CPU runs convolutions inside a while loop several times slower than
  straight-line code, jax#12868) and rolls the loop on GPU/TPU;
* on concrete arrays: `sample` runs compiled programs itself, one for the whole sampler,
  or on CPU when the sampler is longer than a chunk a Python loop over one compiled chunk
  of unrolled steps (no while loop, and compile time bounded by the chunk). Networks
  passed as `jax.tree_util.Partial(module.apply, variables)` (`nets`) are arguments of
  those programs, so they compile once per module and shape.

Every layout computes the same numbers: the per-step noise keys are drawn up front from
`key`. The work per step is the minimum the algorithm needs: synthesis computes `G(z)`
once; sequential joint sampling runs one `G` forward (kept for its backward pass through
`jax.vjp`) and one `G` backward per step, the forward shared by a step's residual gradient
and the next step's latent gradient (see `_unit`). Energies are differentiated unscaled
and divided by `T` in float32, so bfloat16 networks never see the `1/T` cotangent.
"""

import functools
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Tuple, Union

import flax
import jax
import jax.numpy as jnp

Array = jax.Array

REQUIRED_KEYS = ('mcmc_steps', 'mcmc_temp', 'epsilon', 'update_latents', 'use_noise')
OPTIONAL_KEYS = {'epsilon_latent': None, 'tau_res': 0.0,
                 'clip_langevin_grad_res': False, 'max_langevin_norm_res': None,
                 'mcmc_unroll': 'auto', 'mcmc_update': 'sequential'}
# Steps per unrolled chunk on CPU under `mcmc_unroll='auto'` (shorter samplers are one
# straight-line program). Measured at batch 16 with the 32 px paper nets: chunks of 5,
# 10 or the whole 20-step synthesis sampler run within 5% of each other, while a fully
# unrolled 50-step joint sampler took 2 minutes to compile; a 10-step chunk bounds it.
_AUTO_CHUNK = 10


@flax.struct.dataclass
class LangevinResult:
  """Output of `sample`. Shapes: `z` like the input latents, `y`/`images`/`images_init`
  `[B, H, W, C]`; the diagnostics are scalars (mean over steps of the per-step
  `(e^2/2) * mean_batch ||g||`, after clipping for `y`; 0 when latents are fixed)."""
  z: Array
  y: Array
  images: Array
  images_init: Array
  grad_norm_latent: Array
  grad_norm_res: Array


def sampler_settings(config: Union[Mapping[str, Any], Any]) -> dict:
  """Reads and checks the sampler keys of a dict or ConfigDict.

  Raises ValueError naming a missing key or a value outside its range.
  """
  get = (lambda k: config[k]) if isinstance(config, Mapping) else (
      lambda k: getattr(config, k))
  has = (lambda k: k in config) if isinstance(config, Mapping) else (
      lambda k: hasattr(config, k) and getattr(config, k) is not None)
  s = {}
  for k in REQUIRED_KEYS:
    if not has(k):
      raise ValueError(f'Langevin config is missing the key {k!r} (required: '
                       f'{", ".join(REQUIRED_KEYS)}).')
    s[k] = get(k)
  for k, default in OPTIONAL_KEYS.items():
    s[k] = get(k) if has(k) else default
  if int(s['mcmc_steps']) < 0:
    raise ValueError(f"mcmc_steps must be >= 0; got {s['mcmc_steps']}.")
  s['mcmc_steps'] = int(s['mcmc_steps'])
  if not float(s['mcmc_temp']) > 0:
    raise ValueError(f"mcmc_temp (temperature T) must be > 0; got {s['mcmc_temp']}.")
  if not float(s['epsilon']) > 0:
    raise ValueError(f"epsilon (residual step size) must be > 0; got {s['epsilon']}.")
  if s['update_latents']:
    if s['epsilon_latent'] is None:
      raise ValueError("Langevin config is missing the key 'epsilon_latent' (required "
                       'when update_latents=True).')
    if not float(s['epsilon_latent']) > 0:
      raise ValueError('epsilon_latent (latent step size) must be > 0; got '
                       f"{s['epsilon_latent']}.")
  if float(s['tau_res']) < 0:
    raise ValueError(f"tau_res must be >= 0; got {s['tau_res']}.")
  if s['clip_langevin_grad_res']:
    m = s['max_langevin_norm_res']
    if m is None or not float(m) > 0:
      raise ValueError('max_langevin_norm_res must be > 0 when clip_langevin_grad_res '
                       f'is on; got {m}.')
  if s['mcmc_update'] not in ('sequential', 'simultaneous'):
    raise ValueError("mcmc_update must be 'sequential' (the paper's sampler) or "
                     f"'simultaneous' (one backward pass per step); got {s['mcmc_update']!r}.")
  return s


def resolve_unroll(unroll: Union[str, int, bool], steps: int,
                   backend: Optional[str] = None) -> int:
  """Steps per unrolled chunk: `steps` (or more) means one straight-line program.

  `'auto'`: CPU unrolls in chunks of 10 steps (fully up to 10); GPU/TPU use a rolled
  loop (1). An int `k >= 1` is used as given (also as a string of digits, as
  `--config.mcmc_unroll=25` gives it); `True` or 0 mean full unroll.
  """
  if isinstance(unroll, str) and unroll.isdigit():
    unroll = int(unroll)
  if unroll == 'auto':
    backend = backend or jax.default_backend()
    if backend == 'cpu':
      return max(min(steps, _AUTO_CHUNK), 1)
    return 1
  if unroll is True or unroll == 0 or unroll == 'full':
    return max(steps, 1)
  if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 0:
    raise ValueError(f"mcmc_unroll must be 'auto', 'full' or an int >= 0; got {unroll!r}.")
  return unroll


def _per_sample_norm(g: Array) -> Array:
  """L2 norm of each sample of a batch: [B, ...] -> [B]."""
  return jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))


def _clip_per_sample(g: Array, max_norm: float) -> Array:
  """TF `clip_by_norm` applied to each sample separately."""
  norm = _per_sample_norm(g).reshape((-1,) + (1,) * (g.ndim - 1))
  return g * (max_norm / jnp.maximum(norm, max_norm))


class _Settings(NamedTuple):
  """The sampler settings as a hashable tuple (a static argument of the jitted pieces)."""
  steps: int
  temp: float
  eps: float
  update_latents: bool
  use_noise: bool
  tau_res: float
  clip: Optional[float]  # per-sample bound on ||g_y|| (max_langevin_norm_res / (e^2/2))
  eps_z: float
  simultaneous: bool

  @property
  def rotated(self) -> bool:
    """Sequential joint sampling runs as a rotated loop (see `_unit`)."""
    return self.update_latents and not self.simultaneous

  @property
  def num_units(self) -> int:
    """Loop bodies between `_start` and `_finish`."""
    return max(self.steps - 1, 0) if self.rotated else self.steps


def _resolve(config: Any, unroll, backend: Optional[str] = None
             ) -> Tuple['_Settings', int]:
  """Checked settings and the chunk size (`unroll` overrides `config.mcmc_unroll`;
  `'auto'` resolves for `backend`, default `jax.default_backend()`)."""
  s = sampler_settings(config)
  st = _settings(s)
  return st, resolve_unroll(s['mcmc_unroll'] if unroll is None else unroll, st.steps,
                            backend)


def _settings(s: dict) -> _Settings:
  step_y = float(s['epsilon']) ** 2 / 2
  update_latents = bool(s['update_latents'])
  return _Settings(
      steps=s['mcmc_steps'], temp=float(s['mcmc_temp']), eps=float(s['epsilon']),
      update_latents=update_latents, use_noise=bool(s['use_noise']),
      tau_res=float(s['tau_res']),
      clip=(float(s['max_langevin_norm_res']) / step_y
            if s['clip_langevin_grad_res'] else None),
      eps_z=float(s['epsilon_latent']) if update_latents else 0.0,
      simultaneous=update_latents and s['mcmc_update'] == 'simultaneous')


# --- one Langevin step, in pieces ----------------------------------------------------------
# Every piece is pure. The energy is differentiated unscaled and the gradient divided by T
# afterwards in float32: the same numbers as d/dx (sum H / T), but a bfloat16/float16
# network never sees the 1/T (1e8) cotangent.

def _grad_energy(ebm, x: Array) -> Array:
  """d/dx sum_batch H(x) (not yet divided by T)."""
  return jax.grad(lambda xx: jnp.sum(ebm(xx)))(x)


def _move_y(st: _Settings, y: Array, g_energy: Array, key: Array):
  """Residual step from the unscaled energy gradient: returns (y_new, record)."""
  step = st.eps ** 2 / 2
  g = g_energy / st.temp
  if st.tau_res:
    g = g + 2.0 * st.tau_res * y
  if st.clip is not None:
    g = _clip_per_sample(g, st.clip)
  y_new = y - step * g
  if st.use_noise:
    y_new = y_new + st.eps * jax.random.normal(key, y.shape, y.dtype)
  return y_new, step * jnp.mean(_per_sample_norm(g))


def _move_z(st: _Settings, z: Array, g_energy: Array, key: Array):
  """Latent step from the unscaled energy gradient: returns (z_new, record)."""
  step = st.eps_z ** 2 / 2
  g = g_energy / st.temp
  z_new = z - step * g
  if st.use_noise:
    z_new = z_new + st.eps_z * jax.random.normal(key, z.shape, z.dtype)
  return z_new, step * jnp.mean(_per_sample_norm(g))


def _step_keys(key: Array):
  """Step key -> (key of the latent noise, key of the residual noise)."""
  kz, ky = jax.random.split(key)
  return kz, ky


# The loop is `_start`, `num_units` calls of `_unit`, then `_finish`. The carry is
# `(z, y, sum of latent records, sum of residual records)`; `const` is `G(z)` when z is
# fixed (computed once) and None otherwise.
#
# Sequential joint sampling (the paper's) is rotated so that one generator forward pass
# serves both gradients that need G at the same latents: step k's residual gradient at
# (z_{k+1}, y_k) and step k+1's latent gradient at (z_{k+1}, y_{k+1}) share the
# activations of G(z_{k+1}) (through `jax.vjp`). `_start` is step 0's latent move, unit
# `i` (1 <= i < steps) is step i-1's residual move then step i's latent move, `_finish`
# step (steps-1)'s residual move. Per step: one G forward, one G backward, two H
# gradients (instead of two G forwards).
#
# Unit `i` reads the step keys `keys[i - 1], keys[i]` when rotated, `keys[i]` otherwise
# (`_key_offset` = 1 or 0 keys before it).

def _key_offset(st: _Settings) -> int:
  return 1 if st.rotated else 0


def _start(st: _Settings, ebm, gen, z: Array, y: Array, keys: Array):
  """-> (carry, const, images_init). `keys`: the whole `[steps, 2]` key array."""
  zero = jnp.zeros((), jnp.float32)
  if not st.update_latents:
    x_gen = gen(z)
    return (z, y, zero, zero), x_gen, x_gen + y
  if st.rotated and st.steps > 0:
    x_gen, pullback = jax.vjp(gen, z)
    g_z, = pullback(_grad_energy(ebm, x_gen + y))
    z_new, rec_z = _move_z(st, z, g_z, _step_keys(keys[0])[0])
    return (z_new, y, rec_z, zero), None, x_gen + y
  return (z, y, zero, zero), None, gen(z) + y


def _unit(st: _Settings, ebm, gen, carry, const, unit_keys: Array):
  """One loop body; `unit_keys` holds `1 + _key_offset(st)` step keys."""
  z, y, sum_z, sum_y = carry
  if not st.update_latents:  # synthesis: G(z) is `const`
    y, rec_y = _move_y(st, y, _grad_energy(ebm, const + y), _step_keys(unit_keys[0])[1])
    return (z, y, sum_z, sum_y + rec_y)
  if st.simultaneous:  # both gradients at the current (z, y): one backward pass
    kz, ky = _step_keys(unit_keys[0])
    x_gen, pullback = jax.vjp(gen, z)
    g_x = _grad_energy(ebm, x_gen + y)
    g_z, = pullback(g_x)
    z, rec_z = _move_z(st, z, g_z, kz)
    y, rec_y = _move_y(st, y, g_x, ky)
    return (z, y, sum_z + rec_z, sum_y + rec_y)
  # Rotated sequential: residual move of the previous step, latent move of this one.
  x_gen, pullback = jax.vjp(gen, z)
  y, rec_y = _move_y(st, y, _grad_energy(ebm, x_gen + y), _step_keys(unit_keys[0])[1])
  g_z, = pullback(_grad_energy(ebm, x_gen + y))
  z, rec_z = _move_z(st, z, g_z, _step_keys(unit_keys[1])[0])
  return (z, y, sum_z + rec_z, sum_y + rec_y)


def _finish(st: _Settings, ebm, gen, carry, const, images_init, keys: Array):
  """-> LangevinResult. `keys`: the whole key array."""
  z, y, sum_z, sum_y = carry
  if not st.update_latents:
    x_gen = const
  elif st.rotated and st.steps > 0:  # the last residual move
    x_gen = gen(z)
    y, rec_y = _move_y(st, y, _grad_energy(ebm, x_gen + y),
                       _step_keys(keys[st.steps - 1])[1])
    sum_y = sum_y + rec_y
  else:
    x_gen = gen(z)
  denom = float(max(st.steps, 1))
  return LangevinResult(z=z, y=y, images=x_gen + y, images_init=images_init,
                        grad_norm_latent=sum_z / denom, grad_norm_res=sum_y / denom)


def _units(st: _Settings, ebm, gen, carry, const, chunk_keys: Array, n: int):
  """`n` units unrolled; unit j reads `chunk_keys[j : j + 1 + offset]`."""
  width = 1 + _key_offset(st)
  for j in range(n):
    carry = _unit(st, ebm, gen, carry, const, chunk_keys[j:j + width])
  return carry


def _unit_keys(st: _Settings, keys: Array, first: int, n: int) -> Array:
  """The step keys units `first .. first + n - 1` read (a static slice)."""
  lo = first - _key_offset(st)
  return keys[lo:first + n]


def _first_unit(st: _Settings) -> int:
  return 1 if st.rotated else 0


def _sample_inline(st: _Settings, chunk: int, ebm, gen, z, y, key) -> LangevinResult:
  """The whole sampler as traced code: unrolled, or a scan over unrolled chunks."""
  keys = jax.random.split(key, max(st.steps, 1))
  carry, const, images_init = _start(st, ebm, gen, z, y, keys)
  n, first = st.num_units, _first_unit(st)
  n_chunks = n // chunk
  done = 0
  if n_chunks > 1:
    off = _key_offset(st)
    starts = first + chunk * jnp.arange(n_chunks)
    idx = starts[:, None] - off + jnp.arange(chunk + off)[None, :]

    def body(c, chunk_keys):
      return _units(st, ebm, gen, c, const, chunk_keys, chunk), None

    carry, _ = jax.lax.scan(body, carry, keys[idx])
    done = n_chunks * chunk
  carry = _units(st, ebm, gen, carry, const,
                 _unit_keys(st, keys, first + done, n - done), n - done)
  return _finish(st, ebm, gen, carry, const, images_init, keys)


# --- concrete inputs: jitted programs ---------------------------------------------------------
# Networks given as `jax.tree_util.Partial(module.apply, variables)` are pytrees: their
# variables are arguments of the compiled programs (not constants), so one compilation
# serves every call with the same module and shapes. Other callables are static
# arguments (compiled once per callable object).

def _split_net(f):
  """-> (dynamic part, static part): a `Partial` is passed as a pytree argument."""
  if isinstance(f, jax.tree_util.Partial):
    return f, None
  return None, f


def _net(dyn, static):
  return dyn if static is None else static


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _jit_whole(st, chunk, ebm_s, gen_s, ebm_d, gen_d, z, y, key):
  return _sample_inline(st, chunk, _net(ebm_d, ebm_s), _net(gen_d, gen_s), z, y, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_start(st, ebm_s, gen_s, ebm_d, gen_d, z, y, key):
  keys = jax.random.split(key, max(st.steps, 1))
  carry, const, images_init = _start(st, _net(ebm_d, ebm_s), _net(gen_d, gen_s), z, y,
                                     keys)
  return keys, carry, const, images_init


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _jit_units(st, n, ebm_s, gen_s, ebm_d, gen_d, carry, const, chunk_keys):
  return _units(st, _net(ebm_d, ebm_s), _net(gen_d, gen_s), carry, const, chunk_keys, n)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _jit_finish(st, ebm_s, gen_s, ebm_d, gen_d, carry, const, images_init, keys):
  return _finish(st, _net(ebm_d, ebm_s), _net(gen_d, gen_s), carry, const, images_init,
                 keys)


def _host_loop_plan(st: _Settings, chunk: int):
  """[(first unit, units)] of the host loop: chunks of `chunk`, then the remainder one
  unit at a time. At most two programs to compile, and the second is the cheapest (a
  one-step program compiles in a tenth of a 10-step chunk's time; with Winograd convs a
  9-step remainder chunk of the joint sampler took as long to compile as the chunk)."""
  plan, i, end = [], _first_unit(st), _first_unit(st) + st.num_units
  while i < end:
    n = chunk if end - i >= chunk else 1
    plan.append((i, n))
    i += n
  return plan


def _sample_host_loop(st: _Settings, chunk: int, ebm, gen, z, y, key) -> LangevinResult:
  """A Python loop over a jitted program of `chunk` unrolled units (plus a one-unit
  program for the remainder). XLA:CPU runs convolutions inside a while loop several
  times slower than straight-line code (jax#12868), and one straight-line program of
  hundreds of steps takes minutes to compile; this costs neither."""
  (ebm_d, ebm_s), (gen_d, gen_s) = _split_net(ebm), _split_net(gen)
  keys, carry, const, images_init = _jit_start(st, ebm_s, gen_s, ebm_d, gen_d, z, y, key)
  for i, n in _host_loop_plan(st, chunk):
    carry = _jit_units(st, n, ebm_s, gen_s, ebm_d, gen_d, carry, const,
                       _unit_keys(st, keys, i, n))
  return _jit_finish(st, ebm_s, gen_s, ebm_d, gen_d, carry, const, images_init, keys)


def _under_trace(*trees) -> bool:
  """True inside a jax transformation (jit, grad, vmap, ...) or if any leaf is a tracer."""
  if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(trees)):
    return True
  try:
    from jax._src import core  # pylint: disable=g-import-not-at-top
    return not core.trace_state_clean()
  except (ImportError, AttributeError):  # pragma: no cover (a future jax without it)
    return isinstance(jnp.zeros(()), jax.core.Tracer)


def sample(ebm_apply: Callable[[Array], Array], gen_apply: Callable[[Array], Array],
           z: Array, y: Array, key: Array, config: Any,
           unroll: Union[str, int, bool, None] = None,
           backend: Optional[str] = None) -> LangevinResult:
  """Runs `mcmc_steps` Langevin steps on `(z, y)` (SPEC §3).

  Args:
    ebm_apply: `x [B, H, W, C] -> energies [B] or [B, 1]` (the hat network `H`).
    gen_apply: `z -> images [B, H, W, C]` (the generator `G`).
      Pass networks as `jax.tree_util.Partial(module.apply, variables)` (see `nets`)
      so that the variables are arguments of the compiled programs: then calls with
      concrete arrays compile once per module and shape. Any other callable works too
      (it is then compiled once per callable object).
    z: latents `[B, ...]`; y: residual images `[B, H, W, C]`.
    key: PRNG key for the Langevin noise (unused when `use_noise=False`).
    config: dict or ConfigDict with the keys of `sampler_settings`.
    unroll: overrides `config.mcmc_unroll` (see `resolve_unroll`).
    backend: the platform the sampler is compiled for (default
      `jax.default_backend()`); `mcmc_unroll='auto'` resolves for it.
  Returns:
    A `LangevinResult`.

  Called inside a transformation (e.g. a jitted training step) it is traced inline:
  unrolled, or a scan over unrolled chunks. Called with concrete arrays it runs compiled
  programs itself: one program for the whole sampler, except on CPU when the sampler is
  longer than a chunk, where a Python loop drives a compiled chunk of unrolled steps.
  Every layout computes the same numbers (the per-step noise keys are drawn up front).
  """
  st, chunk = _resolve(config, unroll, backend)
  z = jnp.asarray(z, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if _under_trace(ebm_apply, gen_apply, z, y, key):
    return _sample_inline(st, chunk, ebm_apply, gen_apply, z, y, key)
  if _use_host_loop(st, chunk, backend):
    return _sample_host_loop(st, chunk, ebm_apply, gen_apply, z, y, key)
  (ebm_d, ebm_s), (gen_d, gen_s) = _split_net(ebm_apply), _split_net(gen_apply)
  return _jit_whole(st, chunk, ebm_s, gen_s, ebm_d, gen_d, z, y, key)


def _use_host_loop(st: _Settings, chunk: int, backend: Optional[str] = None) -> bool:
  return (backend or jax.default_backend()) == 'cpu' and chunk < st.num_units


def runs_on_host(config: Any, unroll: Union[str, int, bool, None] = None,
                 backend: Optional[str] = None) -> bool:
  """Whether `sample` on concrete arrays drives the steps from a Python loop (CPU, and a
  sampler longer than one chunk). Traced inside a caller's jit the same sampler would
  be a while loop, several times slower on CPU: such a caller should run `sample`
  outside its jit (train.py does, with the modes' `langevin_step`)."""
  st, chunk = _resolve(config, unroll, backend)
  return _use_host_loop(st, chunk, backend)


def lower(ebm_apply: Callable[[Array], Array], gen_apply: Callable[[Array], Array],
          z: Array, y: Array, key: Array, config: Any,
          unroll: Union[str, int, bool, None] = None) -> List[Tuple[str, Any, int]]:
  """The XLA programs `sample` runs for these concrete arguments, lowered, not compiled.

  Returns `[(name, jax.stages.Lowered, calls per sample)]`: one program (`whole`), or on
  CPU for long samplers the host loop's `start`, `chunk<k>` (and `unit` for the
  remainder), `finish`. For compile-time and FLOP accounting (benchmarks/langevin.py):
  `sum(calls * lowered.compile().cost_analysis()['flops'])` is one run's work.
  """
  st, chunk = _resolve(config, unroll)
  z = jnp.asarray(z, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  (ebm_d, ebm_s), (gen_d, gen_s) = _split_net(ebm_apply), _split_net(gen_apply)
  if not _use_host_loop(st, chunk):
    return [('whole', _jit_whole.lower(st, chunk, ebm_s, gen_s, ebm_d, gen_d, z, y, key),
             1)]
  start = _jit_start.lower(st, ebm_s, gen_s, ebm_d, gen_d, z, y, key)
  keys, carry, const, images_init = start.out_info
  out = [('start', start, 1)]
  counts = {}
  for _, n in _host_loop_plan(st, chunk):
    counts[n] = counts.get(n, 0) + 1
  for n, calls in sorted(counts.items(), reverse=True):
    width = n + _key_offset(st)
    chunk_keys = jax.ShapeDtypeStruct((width,) + keys.shape[1:], keys.dtype)
    out.append((f'chunk{n}' if n > 1 else 'unit',
                _jit_units.lower(st, n, ebm_s, gen_s, ebm_d, gen_d, carry, const,
                                 chunk_keys), calls))
  out.append(('finish', _jit_finish.lower(st, ebm_s, gen_s, ebm_d, gen_d, carry, const,
                                          images_init, keys), 1))
  return out


def nets(module: Any, variables: Any) -> jax.tree_util.Partial:
  """`module.apply` bound to `variables` as a pytree, the form `sample` compiles best."""
  return jax.tree_util.Partial(module.apply, variables)


def loop_body(config: Any, ebm_apply: Callable[[Array], Array],
              gen_apply: Callable[[Array], Array], z: Array, y: Array, x_gen: Array,
              key: Array) -> Tuple[Array, Array, Array, Array]:
  """One body of `sample`'s loop on chains `(z, y)` -> `(z, y, record_z, record_y)`:
  the moved chains and the step's gradient-norm records (see `LangevinResult`).

  A Langevin step; for sequential joint sampling the rotated body (the residual move of
  one step, then the latent move of the next). `x_gen` is `G(z)` when the latents are
  fixed (synthesis computes it once), unused otherwise. `sample` runs
  `num_loop_bodies(config)` of these between its start and finish; XLA's cost analysis
  counts a rolled loop's body once, so a compiled sampler's work is its cost plus
  `num_loop_bodies - 1` times this program's (`hat_ebm_jax.plan`).
  """
  st = _settings(sampler_settings(config))
  zero = jnp.zeros((), jnp.float32)
  keys = jax.random.split(key, 1 + _key_offset(st))
  return _unit(st, ebm_apply, gen_apply, (z, y, zero, zero),
               None if st.update_latents else x_gen, keys)


def num_loop_bodies(config: Any) -> int:
  """How many `loop_body` runs one `sample` makes (`mcmc_steps`, or `mcmc_steps - 1` for
  sequential joint sampling, whose first latent and last residual moves sit outside)."""
  return _settings(sampler_settings(config)).num_units
