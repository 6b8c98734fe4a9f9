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

The loop length is static. How it is laid out for the compiler is the `unroll` setting:
XLA:CPU runs convolutions inside a while loop several times slower than straight-line
code, so on CPU the steps are unrolled (in chunks for long samplers, to bound compile
time); on GPU/TPU the whole loop is one `lax.scan` program. Every layout computes the
same numbers: the per-step noise keys are drawn up front from `key`.
"""

from typing import Any, Callable, Mapping, Optional, Union

import flax
import jax
import jax.numpy as jnp

Array = jax.Array

REQUIRED_KEYS = ('mcmc_steps', 'mcmc_temp', 'epsilon', 'update_latents', 'use_noise')
OPTIONAL_KEYS = {'epsilon_latent': None, 'tau_res': 0.0,
                 'clip_langevin_grad_res': False, 'max_langevin_norm_res': None,
                 'mcmc_unroll': 'auto', 'mcmc_update': 'sequential'}
# Longest sampler that is fully unrolled on CPU under `mcmc_unroll='auto'`; longer ones
# run as a scan over unrolled chunks of `_AUTO_CHUNK` steps (bounded compile time).
_AUTO_FULL_UNROLL_MAX = 64
_AUTO_CHUNK = 25


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

  `'auto'`: CPU unrolls fully up to 64 steps and in chunks of 25 beyond; GPU/TPU use a
  rolled loop (1). An int `k >= 1` is used as given; `True` or 0 mean full unroll.
  """
  if unroll == 'auto':
    backend = backend or jax.default_backend()
    if backend == 'cpu':
      return max(steps, 1) if steps <= _AUTO_FULL_UNROLL_MAX else _AUTO_CHUNK
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


def _energy_sum(ebm_apply: Callable[[Array], Array], x: Array, temp: float) -> Array:
  return jnp.sum(ebm_apply(x)) / temp


def sample(ebm_apply: Callable[[Array], Array], gen_apply: Callable[[Array], Array],
           z: Array, y: Array, key: Array, config: Any,
           unroll: Union[str, int, bool, None] = None) -> LangevinResult:
  """Runs `mcmc_steps` Langevin steps on `(z, y)` (SPEC §3).

  Args:
    ebm_apply: `x [B, H, W, C] -> energies [B] or [B, 1]` (the hat network `H`).
    gen_apply: `z -> images [B, H, W, C]` (the generator `G`).
    z: latents `[B, ...]`; y: residual images `[B, H, W, C]`.
    key: PRNG key for the Langevin noise (unused when `use_noise=False`).
    config: dict or ConfigDict with the keys of `sampler_settings`.
    unroll: overrides `config.mcmc_unroll` (see `resolve_unroll`).
  Returns:
    A `LangevinResult`.
  """
  s = sampler_settings(config)
  steps = s['mcmc_steps']
  temp = float(s['mcmc_temp'])
  eps = float(s['epsilon'])
  step_y = eps ** 2 / 2
  update_latents = bool(s['update_latents'])
  use_noise = bool(s['use_noise'])
  tau_res = float(s['tau_res'])
  clip = s['max_langevin_norm_res'] / step_y if s['clip_langevin_grad_res'] else None
  eps_z = float(s['epsilon_latent']) if update_latents else 0.0
  step_z = eps_z ** 2 / 2
  simultaneous = s['mcmc_update'] == 'simultaneous'
  chunk = resolve_unroll(s['mcmc_unroll'] if unroll is None else unroll, steps)

  z = jnp.asarray(z, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  x_gen0 = gen_apply(z)
  images_init = x_gen0 + y
  # In synthesis z never moves, so G(z) is computed once.
  x_gen_fixed = None if update_latents else x_gen0

  def grad_y(x_gen, y):
    g = jax.grad(lambda yy: _energy_sum(ebm_apply, x_gen + yy, temp))(y)
    if tau_res:
      g = g + 2.0 * tau_res * y
    return g

  def move_y(y, g, k):
    if clip is not None:
      g = _clip_per_sample(g, clip)
    y_new = y - step_y * g
    if use_noise:
      y_new = y_new + eps * jax.random.normal(k, y.shape, y.dtype)
    return y_new, step_y * jnp.mean(_per_sample_norm(g))

  def move_z(z, g, k):
    z_new = z - step_z * g
    if use_noise:
      z_new = z_new + eps_z * jax.random.normal(k, z.shape, z.dtype)
    return z_new, step_z * jnp.mean(_per_sample_norm(g))

  def one_step(carry, step_key):
    z, y, sum_z, sum_y = carry
    kz, ky = jax.random.split(step_key)
    if not update_latents:
      x_gen = x_gen_fixed
    elif simultaneous:
      # One backward pass gives both gradients at the current (z, y).
      def joint_energy(zz, yy):
        return _energy_sum(ebm_apply, gen_apply(zz) + yy, temp)
      g_z, g_y_e = jax.grad(joint_energy, argnums=(0, 1))(z, y)
      z, rec_z = move_z(z, g_z, kz)
      g_y = g_y_e + 2.0 * tau_res * y if tau_res else g_y_e
      y, rec_y = move_y(y, g_y, ky)
      return (z, y, sum_z + rec_z, sum_y + rec_y), None
    else:
      g_z = jax.grad(lambda zz: _energy_sum(ebm_apply, gen_apply(zz) + y, temp))(z)
      z, rec_z = move_z(z, g_z, kz)
      sum_z = sum_z + rec_z
      x_gen = gen_apply(z)
    y, rec_y = move_y(y, grad_y(x_gen, y), ky)
    return (z, y, sum_z, sum_y + rec_y), None

  keys = jax.random.split(key, max(steps, 1))
  zero = jnp.zeros((), jnp.float32)
  carry = (z, y, zero, zero)
  n_chunks, rest = divmod(steps, chunk)
  if n_chunks > 1:
    def chunk_body(c, chunk_keys):
      for i in range(chunk):
        c, _ = one_step(c, chunk_keys[i])
      return c, None
    carry, _ = jax.lax.scan(
        chunk_body, carry, keys[:n_chunks * chunk].reshape((n_chunks, chunk) +
                                                           keys.shape[1:]))
    done = n_chunks * chunk
  else:
    done = 0
  for i in range(done, steps):
    carry, _ = one_step(carry, keys[i])
  z, y, sum_z, sum_y = carry
  x_final = x_gen_fixed if x_gen_fixed is not None else gen_apply(z)
  denom = float(max(steps, 1))
  return LangevinResult(
      z=z, y=y, images=x_final + y, images_init=images_init,
      grad_norm_latent=sum_z / denom, grad_norm_res=sum_y / denom)
