"""How `langevin_programs.sample` runs the sampler on concrete arrays: the compiled
programs it picks (one program, or on CPU a Python loop over a compiled chunk of steps),
networks passed as `Partial` pytrees, `langevin_programs.lower`, and the float32 scaling
by 1/T around low-precision networks. The numbers themselves are pinned by
tests/test_langevin.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hat_ebm_jax import langevin, langevin_programs

B, IMG, NZ = 3, (4, 4, 2), 5
D = int(np.prod(IMG))
_rng = np.random.default_rng(0)
Z0 = _rng.standard_normal((B, NZ)).astype(np.float32)
Y0 = (0.1 * _rng.standard_normal((B,) + IMG)).astype(np.float32)
GEN_W = (_rng.standard_normal((NZ, D)) / np.sqrt(NZ)).astype(np.float32)
EBM_W = (_rng.standard_normal((D,)) / np.sqrt(D)).astype(np.float32)
KEY = jax.random.PRNGKey(3)


def energy(w, x):
  """A non-linear energy with parameters `w`: [B, ...] -> [B, 1]."""
  h = x.reshape(x.shape[0], -1)
  return (jnp.sum(jnp.log(jnp.cosh(2 * h)) + 0.1 * h ** 4, axis=1)
          + jnp.tanh(h @ w))[:, None]


def generator(w, z):
  return jnp.tanh(z @ w).reshape((z.shape[0],) + IMG)


EBM = jax.tree_util.Partial(energy, jnp.asarray(EBM_W))
GEN = jax.tree_util.Partial(generator, jnp.asarray(GEN_W))


def cfg(**kw):
  base = dict(mcmc_steps=7, mcmc_temp=0.5, epsilon=0.1, epsilon_latent=0.05,
              update_latents=True, use_noise=True, tau_res=0.2,
              clip_langevin_grad_res=True, max_langevin_norm_res=0.05)
  base.update(kw)
  return base


@functools.lru_cache(maxsize=None)
def _inline(items):
  config = dict(items)
  return jax.jit(lambda e, g, z, y, k: langevin.sample(e, g, z, y, k, config,
                                                       unroll='full'))


def inline(config):
  """The sampler traced inside jit, fully unrolled: the reference layout."""
  return _inline(tuple(sorted(config.items())))(EBM, GEN, Z0, Y0, KEY)


def assert_same(a, b):
  for name in ('z', 'y', 'images', 'images_init', 'grad_norm_latent', 'grad_norm_res'):
    np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-6,
                               err_msg=name)


SAMPLERS = {
    'synthesis': dict(update_latents=False),
    'joint': dict(),
    'joint_simultaneous': dict(mcmc_update='simultaneous'),
}


@pytest.mark.parametrize('unroll', ['full', 1, 2, 3])
@pytest.mark.parametrize('sampler', list(SAMPLERS))
def test_concrete_call_computes_the_inline_chain(sampler, unroll):
  """On concrete arrays `sample` runs compiled programs (on CPU a host loop over chunks of
  `unroll` steps when that is shorter than the sampler): same chain, noise included."""
  config = cfg(**SAMPLERS[sampler])
  got = langevin_programs.sample(EBM, GEN, Z0, Y0, KEY, config, unroll=unroll)
  assert not isinstance(got.y, jax.core.Tracer)
  assert_same(got, inline(config))


def test_plain_callables_work_on_concrete_arrays():
  """Callables that are not pytrees are static arguments of the programs."""
  config = cfg()
  got = langevin_programs.sample(lambda x: energy(EBM_W, x), lambda z: generator(GEN_W, z),
                                 Z0, Y0, KEY, config, unroll=2)
  assert_same(got, inline(config))


@pytest.mark.parametrize('steps', [0, 1, 2])
def test_short_and_empty_samplers_on_concrete_arrays(steps):
  config = cfg(mcmc_steps=steps)
  for unroll in (1, 'full'):
    assert_same(langevin_programs.sample(EBM, GEN, Z0, Y0, KEY, config, unroll=unroll),
                inline(config))


def test_host_loop_programs_on_cpu():
  """`lower` lists the programs `sample` runs: start, chunks, a one-unit program run for
  each step of the remainder, finish; the calls cover every step."""
  if jax.default_backend() != 'cpu':
    pytest.skip('the host loop is the CPU layout')
  progs = langevin_programs.lower(EBM, GEN, Z0, Y0, KEY, cfg(mcmc_steps=12), unroll=5)
  names = [(n, calls) for n, _, calls in progs]
  # Sequential joint: step 0's latent move is in `start`; 11 units = 2 x 5 + 1.
  assert names == [('start', 1), ('chunk5', 2), ('unit', 1), ('finish', 1)]
  progs = langevin_programs.lower(EBM, GEN, Z0, Y0, KEY, cfg(mcmc_steps=14), unroll=5)
  # 13 units = 2 x 5 + 3: the remainder runs the one-unit program three times.
  assert [(n, c) for n, _, c in progs] == [('start', 1), ('chunk5', 2), ('unit', 3),
                                           ('finish', 1)]
  progs = langevin_programs.lower(EBM, GEN, Z0, Y0, KEY,
                                  cfg(mcmc_steps=10, update_latents=False), unroll=5)
  assert [(n, c) for n, _, c in progs] == [('start', 1), ('chunk5', 2), ('finish', 1)]
  progs = langevin_programs.lower(EBM, GEN, Z0, Y0, KEY, cfg(mcmc_steps=10),
                                  unroll='full')
  assert [(n, c) for n, _, c in progs] == [('whole', 1)]
  cost = progs[0][1].cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  assert cost['flops'] > 0


def test_network_variables_are_arguments_not_constants():
  """With `Partial` networks, new variables of the same shapes reuse the compiled chunk."""
  if jax.default_backend() != 'cpu':
    pytest.skip('the host loop is the CPU layout')
  config = cfg(mcmc_steps=9)
  langevin_programs.sample(EBM, GEN, Z0, Y0, KEY, config, unroll=4)
  size = langevin_programs._jit_units._cache_size()  # pylint: disable=protected-access
  ebm2 = jax.tree_util.Partial(energy, jnp.asarray(-EBM_W))
  a = langevin_programs.sample(ebm2, GEN, Z0, Y0, KEY, config, unroll=4)
  assert langevin_programs._jit_units._cache_size() == size  # pylint: disable=protected-access
  b = langevin_programs.sample(EBM, GEN, Z0, Y0, KEY, config, unroll=4)
  assert np.abs(np.asarray(a.y) - np.asarray(b.y)).max() > 1e-4


def test_under_a_transformation_the_sampler_is_traced_inline():
  """Inside jit (e.g. a training step) nothing runs on the host: one traced program."""
  config = cfg(mcmc_steps=6)
  got = jax.jit(lambda z: langevin.sample(EBM, GEN, z, Y0, KEY, config, unroll=2))(Z0)
  assert_same(got, inline(config))


def half_energy(x):
  """sum(x^2) computed in float16: its gradient overflows with a 1/T = 1e8 cotangent."""
  h = x.astype(jnp.float16)
  return jnp.sum(jnp.square(h).reshape(h.shape[0], -1), axis=1).astype(jnp.float32)


def test_energy_is_scaled_by_one_over_t_in_float32_outside_the_network():
  """With T = 1e-8 a low-precision network still gives finite moves: the energy gradient
  is taken unscaled and divided by T in float32."""
  config = cfg(mcmc_temp=1e-8, epsilon=1e-5, use_noise=False, tau_res=0.0,
               update_latents=False, clip_langevin_grad_res=False, mcmc_steps=1)
  r = langevin_programs.sample(half_energy, GEN, Z0, Y0, KEY, config)
  x = np.tanh(Z0 @ GEN_W).reshape((B,) + IMG) + Y0  # H is evaluated at G(z) + y
  want = Y0 - (1e-5 ** 2 / 2) * 2 * x.astype(np.float16).astype(np.float32) / 1e-8
  assert np.all(np.isfinite(r.y))
  np.testing.assert_allclose(r.y, want, rtol=2e-3, atol=1e-6)


def test_mcmc_unroll_accepts_digit_strings():
  """`--config.mcmc_unroll=25` arrives as the string '25'."""
  assert langevin.resolve_unroll('25', 250, 'cpu') == 25
  with pytest.raises(ValueError, match='mcmc_unroll'):
    langevin.resolve_unroll('-2', 250, 'cpu')
