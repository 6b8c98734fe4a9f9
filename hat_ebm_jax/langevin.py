"""The Langevin sampler (docs/algorithm.md §3): its settings, its steps, the traced loop.

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

`Settings` holds the sampler's config keys, checked. `sample` is the sampler as a pure
function to trace inside the caller's jit (e.g. a training step): the steps are inlined,
fully unrolled, or as a `lax.scan` over unrolled chunks (`resolve_unroll`: steps per
chunk; `'auto'` unrolls chunks of 10 steps on CPU, where XLA runs convolutions inside a
while loop several times slower than straight-line code, jax#12868, and rolls the loop
on GPU/TPU). On concrete arrays, `langevin_programs.sample` runs it as compiled programs
(`langevin_programs` holds every layout for the compiler).

The loop is `start`, `Settings.num_units` loop bodies (`units`), then `finish`; every
layout composes these pieces and computes the same numbers: the per-step noise keys are
drawn up front from `key`. The work per step is the minimum the algorithm needs:
synthesis computes `G(z)` once; sequential joint sampling runs one `G` forward (kept for
its backward pass through `jax.vjp`) and one `G` backward per step, the forward shared
by a step's residual gradient and the next step's latent gradient (see `_unit`).
Energies are differentiated unscaled and divided by `T` in float32, so bfloat16 networks
never see the `1/T` cotangent.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional, Tuple, Union

import flax
import jax
import jax.numpy as jnp

Array = jax.Array
Unroll = Union[str, int, bool]

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


def resolve_unroll(unroll: Unroll, steps: int, backend: Optional[str] = None) -> int:
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
  """The sampler's settings, named as the config keys and checked on construction
  (ValueError naming the key). Hashable: a static argument of compiled programs.

  Build it with `Settings.from_config(config)` from a dict, a ConfigDict of these keys
  or a full experiment config; `to_dict()` gives the keys back (for reports).
  """
  mcmc_steps: int
  mcmc_temp: float  # temperature T
  epsilon: float  # residual step size e
  epsilon_latent: Optional[float] = None  # latent step size e_z (needed if update_latents)
  update_latents: bool
  use_noise: bool
  tau_res: float = 0.0
  clip_langevin_grad_res: bool = False
  max_langevin_norm_res: Optional[float] = None
  mcmc_unroll: Unroll = 'auto'  # steps per unrolled chunk (`resolve_unroll`)
  mcmc_update: str = 'sequential'  # or 'simultaneous': both gradients at the current (z, y)

  def __post_init__(self):
    def put(name, value):
      object.__setattr__(self, name, value)
    if int(self.mcmc_steps) < 0:
      raise ValueError(f'mcmc_steps must be >= 0; got {self.mcmc_steps}.')
    put('mcmc_steps', int(self.mcmc_steps))
    if not float(self.mcmc_temp) > 0:
      raise ValueError(f'mcmc_temp (temperature T) must be > 0; got {self.mcmc_temp}.')
    put('mcmc_temp', float(self.mcmc_temp))
    if not float(self.epsilon) > 0:
      raise ValueError(f'epsilon (residual step size) must be > 0; got {self.epsilon}.')
    put('epsilon', float(self.epsilon))
    put('update_latents', bool(self.update_latents))
    if self.update_latents:
      if self.epsilon_latent is None:
        raise ValueError("Langevin config is missing the key 'epsilon_latent' (required "
                         'when update_latents=True).')
      if not float(self.epsilon_latent) > 0:
        raise ValueError('epsilon_latent (latent step size) must be > 0; got '
                         f'{self.epsilon_latent}.')
    if self.epsilon_latent is not None:
      put('epsilon_latent', float(self.epsilon_latent))
    put('use_noise', bool(self.use_noise))
    if float(self.tau_res) < 0:
      raise ValueError(f'tau_res must be >= 0; got {self.tau_res}.')
    put('tau_res', float(self.tau_res))
    put('clip_langevin_grad_res', bool(self.clip_langevin_grad_res))
    m = self.max_langevin_norm_res
    if self.clip_langevin_grad_res and (m is None or not float(m) > 0):
      raise ValueError('max_langevin_norm_res must be > 0 when clip_langevin_grad_res '
                       f'is on; got {m}.')
    if m is not None:
      put('max_langevin_norm_res', float(m))
    if self.mcmc_update not in ('sequential', 'simultaneous'):
      raise ValueError("mcmc_update must be 'sequential' (the paper's sampler) or "
                       "'simultaneous' (one backward pass per step); got "
                       f'{self.mcmc_update!r}.')
    resolve_unroll(self.mcmc_unroll, self.mcmc_steps, 'cpu')  # raises for a bad value

  @classmethod
  def from_config(cls, config: Union['Settings', Mapping[str, Any], Any]) -> 'Settings':
    """Reads and checks the sampler keys of a dict or ConfigDict (a `Settings` is
    returned as it is).

    Keys left out take the defaults of the fields; in a ConfigDict a None value counts
    as left out. In a full experiment config (one with `mode`), `update_latents` left
    out means `mode == 'joint'`. Raises ValueError naming a missing key or a value
    outside its range.
    """
    if isinstance(config, cls):
      return config
    mapping = isinstance(config, Mapping)

    def has(k):  # in a ConfigDict a None value (a placeholder) counts as left out
      return k in config if mapping else getattr(config, k, None) is not None

    def get(k):
      return config[k] if mapping else getattr(config, k)

    values = {}
    if has('mode') and (not has('update_latents') or get('update_latents') is None):
      values['update_latents'] = get('mode') == 'joint'
    for f in dataclasses.fields(cls):
      if f.name in values:
        continue
      if has(f.name):
        values[f.name] = get(f.name)
      elif f.default is dataclasses.MISSING:
        raise ValueError(f'Langevin config is missing the key {f.name!r} (required: '
                         f'{", ".join(REQUIRED_KEYS)}).')
    return cls(**values)

  def to_dict(self) -> dict:
    """`{config key: value}` in the order of the fields."""
    return dataclasses.asdict(self)

  def chunk_size(self, unroll: Optional[Unroll] = None,
                 backend: Optional[str] = None) -> int:
    """Steps per unrolled chunk: `resolve_unroll` of `unroll`, else of `mcmc_unroll`."""
    return resolve_unroll(self.mcmc_unroll if unroll is None else unroll, self.mcmc_steps,
                          backend)

  @property
  def clip_bound(self) -> Optional[float]:
    """Per-sample bound on `||g_y||` (`max_langevin_norm_res / (e^2/2)`), None: no clip."""
    if not self.clip_langevin_grad_res:
      return None
    return self.max_langevin_norm_res / (self.epsilon ** 2 / 2)

  @property
  def simultaneous(self) -> bool:
    return self.update_latents and self.mcmc_update == 'simultaneous'

  @property
  def rotated(self) -> bool:
    """Sequential joint sampling runs as a rotated loop (see `_unit`)."""
    return self.update_latents and not self.simultaneous

  @property
  def num_units(self) -> int:
    """Loop bodies between `start` and `finish`."""
    return max(self.mcmc_steps - 1, 0) if self.rotated else self.mcmc_steps

  @property
  def keys_per_unit(self) -> int:
    """Step keys a loop body reads: unit `i` reads `keys[i : i + keys_per_unit]`."""
    return 2 if self.rotated else 1


SettingsLike = Union[Settings, Mapping[str, Any], Any]  # `Settings.from_config` reads it
REQUIRED_KEYS = tuple(f.name for f in dataclasses.fields(Settings)
                      if f.default is dataclasses.MISSING)


def _per_sample_norm(g: Array) -> Array:
  """L2 norm of each sample of a batch: [B, ...] -> [B]."""
  return jnp.sqrt(jnp.sum(jnp.square(g), axis=tuple(range(1, g.ndim))))


def _clip_per_sample(g: Array, max_norm: float) -> Array:
  """TF `clip_by_norm` applied to each sample separately."""
  norm = _per_sample_norm(g).reshape((-1,) + (1,) * (g.ndim - 1))
  return g * (max_norm / jnp.maximum(norm, max_norm))


# --- one Langevin step, in pieces -------------------------------------------------------
# Every piece is pure. The energy is differentiated unscaled and the gradient divided by T
# afterwards in float32: the same numbers as d/dx (sum H / T), but a bfloat16/float16
# network never sees the 1/T (1e8) cotangent.

def _grad_energy(ebm, x: Array) -> Array:
  """d/dx sum_batch H(x) (not yet divided by T)."""
  return jax.grad(lambda xx: jnp.sum(ebm(xx)))(x)


def _move_y(st: Settings, y: Array, g_energy: Array, key: Array):
  """Residual step from the unscaled energy gradient: returns (y_new, record)."""
  step = st.epsilon ** 2 / 2
  g = g_energy / st.mcmc_temp
  if st.tau_res:
    g = g + 2.0 * st.tau_res * y
  if st.clip_bound is not None:
    g = _clip_per_sample(g, st.clip_bound)
  y_new = y - step * g
  if st.use_noise:
    y_new = y_new + st.epsilon * jax.random.normal(key, y.shape, y.dtype)
  return y_new, step * jnp.mean(_per_sample_norm(g))


def _move_z(st: Settings, z: Array, g_energy: Array, key: Array):
  """Latent step from the unscaled energy gradient: returns (z_new, record)."""
  step = st.epsilon_latent ** 2 / 2
  g = g_energy / st.mcmc_temp
  z_new = z - step * g
  if st.use_noise:
    z_new = z_new + st.epsilon_latent * jax.random.normal(key, z.shape, z.dtype)
  return z_new, step * jnp.mean(_per_sample_norm(g))


def _noise_keys(key: Array):
  """Step key -> (key of the latent noise, key of the residual noise)."""
  kz, ky = jax.random.split(key)
  return kz, ky


# The loop is `start`, `num_units` calls of `_unit`, then `finish`. The carry is
# `(z, y, sum of latent records, sum of residual records)`; `const` is `G(z)` when z is
# fixed (computed once) and None otherwise. `keys` holds one key per step.
#
# Sequential joint sampling (the paper's) is rotated so that one generator forward pass
# serves both gradients that need G at the same latents: step k's residual gradient at
# (z_{k+1}, y_k) and step k+1's latent gradient at (z_{k+1}, y_{k+1}) share the
# activations of G(z_{k+1}) (through `jax.vjp`). `start` is step 0's latent move, unit
# `i` (0 <= i < steps - 1) is step i's residual move then step i+1's latent move,
# `finish` step (steps-1)'s residual move. Per step: one G forward, one G backward, two H
# gradients (instead of two G forwards). Unit `i` reads the step keys
# `keys[i : i + keys_per_unit]`: `keys[i], keys[i + 1]` when rotated, `keys[i]` otherwise.

def start(st: Settings, ebm, gen, z: Array, y: Array, key: Array):
  """-> (keys, carry, const, images_init): the `[max(steps, 1)]` step keys drawn from
  `key`, and the state the loop bodies start from."""
  keys = jax.random.split(key, max(st.mcmc_steps, 1))
  zero = jnp.zeros((), jnp.float32)
  if not st.update_latents:
    x_gen = gen(z)
    return keys, (z, y, zero, zero), x_gen, x_gen + y
  if st.rotated and st.mcmc_steps > 0:
    x_gen, pullback = jax.vjp(gen, z)
    g_z, = pullback(_grad_energy(ebm, x_gen + y))
    z_new, rec_z = _move_z(st, z, g_z, _noise_keys(keys[0])[0])
    return keys, (z_new, y, rec_z, zero), None, x_gen + y
  return keys, (z, y, zero, zero), None, gen(z) + y


def _unit(st: Settings, ebm, gen, carry, const, step_keys: Array):
  """One loop body; `step_keys` holds `st.keys_per_unit` step keys."""
  z, y, sum_z, sum_y = carry
  if not st.update_latents:  # synthesis: G(z) is `const`
    y, rec_y = _move_y(st, y, _grad_energy(ebm, const + y), _noise_keys(step_keys[0])[1])
    return (z, y, sum_z, sum_y + rec_y)
  if st.simultaneous:  # both gradients at the current (z, y): one backward pass
    kz, ky = _noise_keys(step_keys[0])
    x_gen, pullback = jax.vjp(gen, z)
    g_x = _grad_energy(ebm, x_gen + y)
    g_z, = pullback(g_x)
    z, rec_z = _move_z(st, z, g_z, kz)
    y, rec_y = _move_y(st, y, g_x, ky)
    return (z, y, sum_z + rec_z, sum_y + rec_y)
  # Rotated sequential: residual move of this step, latent move of the next one.
  x_gen, pullback = jax.vjp(gen, z)
  y, rec_y = _move_y(st, y, _grad_energy(ebm, x_gen + y), _noise_keys(step_keys[0])[1])
  g_z, = pullback(_grad_energy(ebm, x_gen + y))
  z, rec_z = _move_z(st, z, g_z, _noise_keys(step_keys[1])[0])
  return (z, y, sum_z + rec_z, sum_y + rec_y)


def unit_keys(st: Settings, keys: Array, first: int, n: int) -> Array:
  """The step keys units `first .. first + n - 1` read (a static slice)."""
  return keys[first:first + n + st.keys_per_unit - 1]


def units(st: Settings, ebm, gen, carry, const, chunk_keys: Array, n: int):
  """`n` loop bodies unrolled; `chunk_keys` is their `unit_keys`."""
  for j in range(n):
    carry = _unit(st, ebm, gen, carry, const, chunk_keys[j:j + st.keys_per_unit])
  return carry


def finish(st: Settings, ebm, gen, carry, const, images_init, keys: Array
           ) -> LangevinResult:
  """-> LangevinResult. `keys`: the whole key array."""
  z, y, sum_z, sum_y = carry
  if not st.update_latents:
    x_gen = const
  elif st.rotated and st.mcmc_steps > 0:  # the last residual move
    x_gen = gen(z)
    y, rec_y = _move_y(st, y, _grad_energy(ebm, x_gen + y),
                       _noise_keys(keys[st.mcmc_steps - 1])[1])
    sum_y = sum_y + rec_y
  else:
    x_gen = gen(z)
  denom = float(max(st.mcmc_steps, 1))
  return LangevinResult(z=z, y=y, images=x_gen + y, images_init=images_init,
                        grad_norm_latent=sum_z / denom, grad_norm_res=sum_y / denom)


def sample(ebm_apply: Callable[[Array], Array], gen_apply: Callable[[Array], Array],
           z: Array, y: Array, key: Array, settings: SettingsLike,
           unroll: Optional[Unroll] = None,
           backend: Optional[str] = None) -> LangevinResult:
  """Runs `mcmc_steps` Langevin steps on `(z, y)` (docs/algorithm.md §3) as traced code.

  A pure function for use inside the caller's jit (a training step, an evaluation
  sampler): the steps are inlined, fully unrolled, or as a `lax.scan` over unrolled
  chunks. On concrete arrays call `langevin_programs.sample`, which runs this as
  compiled programs (called outside jit, this function runs op by op, slowly).

  Args:
    ebm_apply: `x [B, H, W, C] -> energies [B] or [B, 1]` (the hat network `H`).
    gen_apply: `z -> images [B, H, W, C]` (the generator `G`).
    z: latents `[B, ...]`; y: residual images `[B, H, W, C]`.
    key: PRNG key for the Langevin noise (unused when `use_noise=False`).
    settings: a `Settings`, or a dict / ConfigDict with its keys (`Settings.from_config`).
    unroll: steps per unrolled chunk, overrides `mcmc_unroll` (see `resolve_unroll`).
    backend: the platform the sampler is compiled for (default
      `jax.default_backend()`); `mcmc_unroll='auto'` resolves for it.
  Returns:
    A `LangevinResult`. Every layout computes the same numbers (the per-step noise keys
    are drawn up front).
  """
  st = Settings.from_config(settings)
  chunk = st.chunk_size(unroll, backend)
  z = jnp.asarray(z, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  keys, carry, const, images_init = start(st, ebm_apply, gen_apply, z, y, key)
  n = st.num_units
  n_chunks = n // chunk
  done = 0
  if n_chunks > 1:
    width = chunk + st.keys_per_unit - 1
    idx = chunk * jnp.arange(n_chunks)[:, None] + jnp.arange(width)[None, :]

    def body(c, chunk_keys):
      return units(st, ebm_apply, gen_apply, c, const, chunk_keys, chunk), None

    carry, _ = jax.lax.scan(body, carry, keys[idx])
    done = n_chunks * chunk
  carry = units(st, ebm_apply, gen_apply, carry, const,
                unit_keys(st, keys, done, n - done), n - done)
  return finish(st, ebm_apply, gen_apply, carry, const, images_init, keys)


def nets(module: Any, variables: Any) -> jax.tree_util.Partial:
  """`module.apply` bound to `variables` as a pytree: the networks' form for `sample`
  that `langevin_programs` compiles once per module and shape (the variables are
  arguments of its programs, not constants)."""
  return jax.tree_util.Partial(module.apply, variables)


def loop_body(settings: SettingsLike,
              ebm_apply: Callable[[Array], Array], gen_apply: Callable[[Array], Array],
              z: Array, y: Array, x_gen: Array, key: Array
              ) -> Tuple[Array, Array, Array, Array]:
  """One body of `sample`'s loop on chains `(z, y)` -> `(z, y, record_z, record_y)`:
  the moved chains and the step's gradient-norm records (see `LangevinResult`).

  A Langevin step; for sequential joint sampling the rotated body (the residual move of
  one step, then the latent move of the next). `x_gen` is `G(z)` when the latents are
  fixed (synthesis computes it once), unused otherwise. `sample` runs
  `num_loop_bodies(settings)` of these between its start and finish; XLA's cost analysis
  counts a rolled loop's body once, so a compiled sampler's work is its cost plus
  `num_loop_bodies - 1` times this program's (`hat_ebm_jax.plan`).
  """
  st = Settings.from_config(settings)
  zero = jnp.zeros((), jnp.float32)
  keys = jax.random.split(key, st.keys_per_unit)
  return _unit(st, ebm_apply, gen_apply, (z, y, zero, zero),
               None if st.update_latents else x_gen, keys)


def num_loop_bodies(settings: SettingsLike) -> int:
  """How many `loop_body` runs one `sample` makes (`mcmc_steps`, or `mcmc_steps - 1` for
  sequential joint sampling, whose first latent and last residual moves sit outside)."""
  return Settings.from_config(settings).num_units
