"""The Langevin sampler of docs/algorithm.md §3.

Conformance: the two recorded runs of the original (`ebm_sngan32` + `gen_sngan32`) are
reproduced under every loop layout. Properties: with hand-made energies (quadratic,
linear, zero) the sampler follows closed forms in numpy, which pins down the step sizes,
the update order, the clip, `tau_res`, the noise and the diagnostics.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from hat_ebm_jax import langevin

KEY = jax.random.PRNGKey(0)

# ---------------------------------------------------------------------------------------
# Conformance with the original
# ---------------------------------------------------------------------------------------

MOVE_RTOL = 1e-3    # max |our move - original move| / max |original move|
INIT_RTOL = 1e-5    # images_init, relative to its largest value
DIAG_RTOL = 1e-5    # grad_norm_latent, grad_norm_res
UNROLLS = ('auto', 'full', 2)   # 2: a scan over chunks of 2 steps plus 1 unrolled step
_RUNS = {}


def _run_reference_case(case, unroll, ref_net, manifest, ref_dir, conv_algorithm='auto'):
  """Runs the sampler of a recorded case and caches the result per (case, layout).

  Layouts are keyed by the chunk size `unroll` resolves to on this backend: on CPU 'auto'
  and 'full' are the same program (5 steps unrolled), which is compiled once.
  """
  config = manifest['_langevin'][case]['config']
  chunk = langevin.resolve_unroll(unroll, config['mcmc_steps'])
  if (case, chunk, conv_algorithm) not in _RUNS:
    ebm, ebm_vars = ref_net('ebm_sngan32', conv_algorithm=conv_algorithm)
    gen, gen_vars = ref_net('gen_sngan32', conv_algorithm=conv_algorithm)

    @jax.jit
    def run(ev, gv, z, y):
      return langevin.sample(lambda x: ebm.apply(ev, x), lambda zz: gen.apply(gv, zz),
                             z, y, KEY, config, unroll=unroll)

    ref = _load_case(ref_dir, case)
    _RUNS[case, chunk, conv_algorithm] = jax.tree_util.tree_map(
        np.asarray, run(ebm_vars, gen_vars, ref['z_init'], ref['y_init']))
  return _RUNS[case, chunk, conv_algorithm]


@functools.lru_cache(maxsize=None)
def _load_case(ref_dir, case):
  return dict(np.load(ref_dir / f'langevin_{case}.npz'))


def _move_error(ours, ref, start):
  """max |(ours - start) - (ref - start)| / max |ref - start|."""
  return np.abs(ours - ref).max() / np.abs(ref - start).max()


# Every (case, layout) with direct convs, and Winograd on both cases. Winograd on the
# refine case runs every conv path of the synthesis case (the generator forward, the EBM's
# input gradient) plus the generator's input gradient, so the quick tier keeps that one
# and the synthesis + Winograd program (one more compile) runs in the full suite.
CONFORMANCE = ([(case, u, 'auto') for case in ('synthesis', 'refine') for u in UNROLLS]
               + [pytest.param('synthesis', 'auto', 'winograd', marks=pytest.mark.slow),
                  ('refine', 'auto', 'winograd')])


@pytest.mark.parametrize('case,unroll,conv_algorithm', CONFORMANCE)
def test_reproduces_original_langevin_run(case, unroll, conv_algorithm, ref_net, manifest,
                                          ref_dir):
  """Moves of y, z and the images agree with the original to 1e-3 of their size,
  images_init to 1e-5 and both gradient-norm diagnostics to 1e-5 relative, in every loop
  layout and with Winograd convolutions forced on (their input gradients included)."""
  ref = _load_case(ref_dir, case)
  r = _run_reference_case(case, unroll, ref_net, manifest, ref_dir, conv_algorithm)
  err_y = _move_error(r.y, ref['y'], ref['y_init'])
  err_img = _move_error(r.images, ref['images'], ref['images_init'])
  err_init = np.abs(r.images_init - ref['images_init']).max() / np.abs(
      ref['images_init']).max()
  if np.any(ref['z'] != ref['z_init']):
    err_z = _move_error(r.z, ref['z'], ref['z_init'])
  else:  # synthesis: latents fixed
    err_z = 0.0
    np.testing.assert_array_equal(r.z, ref['z_init'])
  diag = {}
  for k in ('grad_norm_latent', 'grad_norm_res'):
    if ref[k] == 0:
      assert getattr(r, k) == 0
      diag[k] = 0.0
    else:
      diag[k] = abs(float(getattr(r, k)) - float(ref[k])) / abs(float(ref[k]))
  print(f'\n[conformance] langevin {case} unroll={unroll} {conv_algorithm}: y {err_y:.3g} z {err_z:.3g} '
        f'images {err_img:.3g} images_init {err_init:.3g} '
        f'grad_norm_latent {diag["grad_norm_latent"]:.3g} '
        f'grad_norm_res {diag["grad_norm_res"]:.3g}')
  assert err_y <= MOVE_RTOL
  assert err_z <= MOVE_RTOL
  assert err_img <= MOVE_RTOL
  assert err_init <= INIT_RTOL
  assert diag['grad_norm_latent'] <= DIAG_RTOL
  assert diag['grad_norm_res'] <= DIAG_RTOL


@pytest.mark.parametrize('case', ['synthesis', 'refine'])
def test_loop_layouts_agree_on_original_nets(case, ref_net, manifest, ref_dir):
  """'auto', 'full' and chunked (unroll=2 over 5 steps) compute the same run."""
  runs = [_run_reference_case(case, u, ref_net, manifest, ref_dir) for u in UNROLLS]
  ref = _load_case(ref_dir, case)
  for r in runs[1:]:
    for k, start in (('y', ref['y_init']), ('z', ref['z_init'])):
      scale = max(np.abs(ref[k] - start).max(), 1e-30)
      assert np.abs(getattr(r, k) - getattr(runs[0], k)).max() <= MOVE_RTOL * scale, k
    np.testing.assert_allclose(r.grad_norm_res, runs[0].grad_norm_res, rtol=DIAG_RTOL)
    np.testing.assert_allclose(r.grad_norm_latent, runs[0].grad_norm_latent,
                               rtol=DIAG_RTOL)


# ---------------------------------------------------------------------------------------
# Properties with hand-made energies
# ---------------------------------------------------------------------------------------

B, IMG, NZ = 4, (4, 4, 2), 3
D = int(np.prod(IMG))
_rng = np.random.default_rng(0)
A = (_rng.standard_normal((NZ, D)) / np.sqrt(NZ)).astype(np.float32)   # linear generator
Z0 = _rng.standard_normal((B, NZ)).astype(np.float32)
Y0 = (0.3 * _rng.standard_normal((B,) + IMG)).astype(np.float32)
QUAD_A = 1.0  # H(x) = 0.5 * a * ||x||^2 per sample


def quad_energy(x):
  return 0.5 * QUAD_A * jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim)))


def linear_gen(z):
  return (z @ A).reshape((z.shape[0],) + IMG)


def identity(z):
  return z


def cfg(**kw):
  base = dict(mcmc_steps=3, mcmc_temp=2.0, epsilon=0.6, epsilon_latent=0.4,
              update_latents=False, use_noise=False, tau_res=0.0,
              clip_langevin_grad_res=False, max_langevin_norm_res=None)
  base.update(kw)
  return base


@functools.lru_cache(maxsize=None)
def _compiled_sampler(ebm, gen, config_items, unroll):
  config = dict(config_items)
  return jax.jit(lambda z, y, k: langevin.sample(ebm, gen, z, y, k, config, unroll=unroll))


def run(config, ebm=quad_energy, gen=linear_gen, z=Z0, y=Y0, key=KEY, unroll=None):
  """`langevin.sample` under jit (compiled once per energy/generator/config/layout)."""
  sampler = _compiled_sampler(ebm, gen, tuple(sorted(config.items())), unroll)
  return jax.tree_util.tree_map(np.asarray, sampler(z, y, key))


def closed_form_quadratic(config, z0=Z0, y0=Y0):
  """Numpy float64 reference of the sampler for `quad_energy` and `linear_gen`
  (no noise, no clip): returns z, y, grad_norm_latent, grad_norm_res."""
  a_t = QUAD_A / config['mcmc_temp']
  s_y, s_z = config['epsilon'] ** 2 / 2, config['epsilon_latent'] ** 2 / 2
  tau = config['tau_res']
  z, y = z0.astype(np.float64), y0.reshape(B, D).astype(np.float64)
  a = A.astype(np.float64)
  rec_z, rec_y = [], []
  for _ in range(config['mcmc_steps']):
    r_old = z @ a + y
    if config['update_latents']:
      g_z = a_t * r_old @ a.T
      z = z - s_z * g_z
      rec_z.append(s_z * np.linalg.norm(g_z, axis=1).mean())
    r = r_old if config.get('mcmc_update') == 'simultaneous' else z @ a + y
    g_y = a_t * r + 2 * tau * y
    y = y - s_y * g_y
    rec_y.append(s_y * np.linalg.norm(g_y, axis=1).mean())
  return (z, y.reshape((B,) + IMG), np.mean(rec_z) if rec_z else 0.0, np.mean(rec_y))


def test_fixed_latent_quadratic_energy_follows_closed_form():
  """update_latents=False, no noise: y_{k+1} = y_k - (e^2/2)(a/T)(G(z) + y_k), z fixed,
  images = G(z) + y, images_init = G(z0) + y0."""
  config = cfg(mcmc_steps=4)
  r = run(config)
  z, y, _, gn_res = closed_form_quadratic(config)
  np.testing.assert_allclose(r.y, y, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(r.z, Z0)
  np.testing.assert_allclose(r.images, linear_gen(Z0) + r.y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.images_init, linear_gen(Z0) + Y0, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.grad_norm_res, gn_res, rtol=1e-5)
  assert r.grad_norm_latent == 0


@pytest.mark.parametrize('tau_res', [0.0, 0.7])
def test_joint_quadratic_energy_follows_closed_form(tau_res):
  """update_latents=True (sequential): z moves first by -(e_z^2/2) dH/dz / T, then y by
  -(e^2/2) [dH/dy / T + 2 tau_res y] at the *new* z; diagnostics are the step means of
  (step size) * mean_batch ||g||."""
  config = cfg(mcmc_steps=4, update_latents=True, tau_res=tau_res)
  r = run(config)
  z, y, gn_lat, gn_res = closed_form_quadratic(config)
  np.testing.assert_allclose(r.z, z, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.y, y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.images, linear_gen(r.z) + r.y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.grad_norm_latent, gn_lat, rtol=1e-5)
  np.testing.assert_allclose(r.grad_norm_res, gn_res, rtol=1e-5)


def test_simultaneous_update_follows_closed_form_and_differs_from_sequential():
  """mcmc_update='simultaneous' takes both gradients at the current (z, y); it is a
  different sampler from the paper's sequential one."""
  config = cfg(mcmc_steps=4, update_latents=True, tau_res=0.7,
               mcmc_update='simultaneous')
  r = run(config)
  z, y, gn_lat, gn_res = closed_form_quadratic(config)
  np.testing.assert_allclose(r.z, z, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.y, y, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.grad_norm_latent, gn_lat, rtol=1e-5)
  np.testing.assert_allclose(r.grad_norm_res, gn_res, rtol=1e-5)
  seq = run(cfg(mcmc_steps=4, update_latents=True, tau_res=0.7))
  assert np.abs(seq.y - r.y).max() > 1e-3


def test_simultaneous_equals_sequential_when_latents_are_fixed():
  """With update_latents=False there is nothing to order: both modes agree."""
  a = run(cfg(mcmc_update='simultaneous'))
  b = run(cfg())
  np.testing.assert_allclose(a.y, b.y, rtol=1e-6, atol=1e-7)


def test_clip_bounds_each_samples_move_and_diagnostic_is_after_clip():
  """One step with the clip: samples whose move (e^2/2)||g|| exceeds max_langevin_norm_res
  move exactly that far along -g; the others are untouched; grad_norm_res is the mean of
  the clipped moves."""
  scales = np.array([0.1, 0.5, 2.0, 8.0], np.float32)
  y0 = np.zeros((B,) + IMG, np.float32)
  z0 = Z0 * scales[:, None]
  base = cfg(mcmc_steps=1)
  free = run(base, z=z0, y=y0)
  free_norm = np.linalg.norm((free.y - y0).reshape(B, -1), axis=1)
  max_norm = float(np.median(free_norm))
  clipped = run(cfg(mcmc_steps=1, clip_langevin_grad_res=True,
                    max_langevin_norm_res=max_norm), z=z0, y=y0)
  move = (clipped.y - y0).reshape(B, -1)
  norm = np.linalg.norm(move, axis=1)
  big = free_norm > max_norm
  assert big.any() and (~big).any()
  np.testing.assert_allclose(norm[big], max_norm, rtol=1e-5)
  np.testing.assert_allclose(clipped.y[~big], free.y[~big], rtol=1e-6, atol=1e-7)
  # Same direction as the free move.
  free_move = (free.y - y0).reshape(B, -1)
  want = free_move[big] * (max_norm / free_norm[big])[:, None]
  np.testing.assert_allclose(move[big], want, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(clipped.grad_norm_res, np.minimum(free_norm, max_norm).mean(),
                             rtol=1e-5)


def test_clip_bounds_every_step_of_a_long_run():
  """A steep linear energy H = c.x: each of k steps moves y by exactly
  max_langevin_norm_res along -c, so y_k = y_0 - k max c/||c|| and grad_norm_res = max."""
  c = np.random.default_rng(1).standard_normal(IMG).astype(np.float32) * 1e3
  max_norm = 0.05
  config = cfg(mcmc_steps=5, clip_langevin_grad_res=True, max_langevin_norm_res=max_norm)
  r = run(config, ebm=lambda x: jnp.sum(x * c, axis=(1, 2, 3)))
  want = Y0 - 5 * max_norm * c / np.linalg.norm(c)
  np.testing.assert_allclose(r.y, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r.grad_norm_res, max_norm, rtol=1e-5)


def sin_energy(x):
  return jnp.sum(jnp.sin(2.0 * x), axis=tuple(range(1, x.ndim)))


def test_tau_res_adds_exactly_2_tau_y_to_the_residual_gradient():
  """One step with tau_res moves y by an extra -(e^2/2) * 2 tau_res * y_0, whatever the
  energy."""
  tau = 1.3
  e = cfg()['epsilon']
  with_tau = run(cfg(mcmc_steps=1, tau_res=tau), ebm=sin_energy)
  without = run(cfg(mcmc_steps=1), ebm=sin_energy)
  np.testing.assert_allclose(with_tau.y - without.y, -(e ** 2 / 2) * 2 * tau * Y0,
                             rtol=1e-4, atol=1e-6)


def test_latent_gradient_has_no_tau_res_term():
  """The first latent step is -(e_z^2/2) dH(G(z)+y)/dz / T whatever tau_res is."""
  config = cfg(mcmc_steps=1, update_latents=True)
  r0 = run(config)
  r1 = run(dict(config, tau_res=5.0))
  np.testing.assert_array_equal(r1.z, r0.z)
  z, _, gn_lat, _ = closed_form_quadratic(config)
  np.testing.assert_allclose(r0.z, z, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r1.grad_norm_latent, gn_lat, rtol=1e-5)


def test_fixed_latents_are_returned_unchanged():
  """With update_latents=False, z comes back bit for bit and grad_norm_latent is 0,
  even with noise on."""
  r = run(cfg(use_noise=True))
  np.testing.assert_array_equal(r.z, Z0)
  assert r.grad_norm_latent == 0


def test_zero_steps_returns_the_start():
  """mcmc_steps=0 returns the inputs, images = images_init, diagnostics 0."""
  r = run(cfg(mcmc_steps=0, update_latents=True))
  np.testing.assert_array_equal(r.y, Y0)
  np.testing.assert_array_equal(r.z, Z0)
  np.testing.assert_allclose(r.images, r.images_init)
  assert r.grad_norm_latent == 0 and r.grad_norm_res == 0


# --- noise ------------------------------------------------------------------------------

NB, NIMG = 64, (8, 8, 3)


def zero_energy(x):
  return 0.0 * jnp.sum(x, axis=tuple(range(1, x.ndim)))


def noise_run(key, steps=1, update_latents=True):
  z0 = np.zeros((NB,) + NIMG, np.float32)
  config = cfg(mcmc_steps=steps, use_noise=True, update_latents=update_latents,
               epsilon=0.3, epsilon_latent=0.02)
  return run(config, ebm=zero_energy, gen=identity, z=z0, y=z0, key=key)


def test_noise_is_reproducible_for_a_key_and_differs_for_another():
  """The same key gives the same chain bit for bit; another key another chain."""
  a, b = noise_run(KEY), noise_run(KEY)
  c = noise_run(jax.random.PRNGKey(1))
  np.testing.assert_array_equal(a.y, b.y)
  np.testing.assert_array_equal(a.z, b.z)
  assert not np.allclose(a.y, c.y) and not np.allclose(a.z, c.z)


def test_noise_has_scale_epsilon_and_is_fresh_each_step():
  """Under zero energy one step moves y by e N(0, 1) and z by e_z N(0, 1); two steps by
  e sqrt(2) N(0, 1) (independent noise per step), and z's noise is not y's."""
  one = noise_run(KEY, steps=1)
  two = noise_run(KEY, steps=2)
  ny, nz = one.y / 0.3, one.z / 0.02
  assert abs(ny.mean()) < 0.05 and abs(ny.std() - 1) < 0.05
  assert abs(nz.mean()) < 0.05 and abs(nz.std() - 1) < 0.05
  assert abs(two.y.std() / 0.3 - np.sqrt(2)) < 0.07
  assert abs(np.corrcoef(ny.ravel(), nz.ravel())[0, 1]) < 0.05


# --- batch independence, layouts --------------------------------------------------------

def nonlinear_energy(x):
  return jnp.sum(jnp.log(jnp.cosh(2 * x)) + 0.1 * x ** 4, axis=tuple(range(1, x.ndim)))


def tanh_gen(z):
  return jnp.tanh(linear_gen(z))


def test_result_of_a_sample_does_not_depend_on_the_batch():
  """Without noise, a sample run alone ends where it ends inside a batch: energies are
  summed (not averaged) over the batch and the clip is per sample."""
  config = cfg(mcmc_steps=3, update_latents=True, tau_res=0.4,
               clip_langevin_grad_res=True, max_langevin_norm_res=0.02)
  batch = run(config, ebm=nonlinear_energy, gen=tanh_gen)
  alone = run(config, ebm=nonlinear_energy, gen=tanh_gen, z=Z0[2:3], y=Y0[2:3])
  np.testing.assert_allclose(alone.z[0], batch.z[2], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(alone.y[0], batch.y[2], rtol=1e-5, atol=1e-6)
  # The clip was active: unclipped moves are larger.
  unclipped = run(dict(config, clip_langevin_grad_res=False), ebm=nonlinear_energy,
                  gen=tanh_gen)
  assert unclipped.grad_norm_res > 0.02


def test_every_loop_layout_computes_the_same_chain_noise_included():
  """Per-step noise keys are drawn up front, so a rolled scan (unroll=1), a scan over
  chunks of 2 plus a remainder step, and the fully unrolled loop give the same 5-step
  noisy chain."""
  config = cfg(mcmc_steps=5, update_latents=True, use_noise=True, tau_res=0.3)
  want = run(config, ebm=nonlinear_energy, gen=tanh_gen, unroll='full')
  for unroll in (1, 2):
    got = run(config, ebm=nonlinear_energy, gen=tanh_gen, unroll=unroll)
    np.testing.assert_allclose(got.z, want.z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.y, want.y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.grad_norm_latent, want.grad_norm_latent, rtol=1e-5)
    np.testing.assert_allclose(got.grad_norm_res, want.grad_norm_res, rtol=1e-5)


def test_config_mcmc_unroll_is_used_when_no_override():
  """`mcmc_unroll` in the config selects the layout (same numbers as any other)."""
  config = cfg(mcmc_steps=5, mcmc_unroll=2)
  np.testing.assert_allclose(run(config).y, run(cfg(mcmc_steps=5)).y, rtol=1e-6,
                             atol=1e-7)


@pytest.mark.parametrize('unroll,steps,backend,want', [
    ('auto', 7, 'cpu', 7), ('auto', 10, 'cpu', 10), ('auto', 50, 'cpu', 10),
    ('auto', 250, 'cpu', 10),
    ('auto', 0, 'cpu', 1), ('auto', 50, 'gpu', 1), ('auto', 50, 'tpu', 1),
    ('full', 50, 'gpu', 50), (True, 7, None, 7), (0, 7, None, 7), (3, 7, None, 3),
])
def test_resolve_unroll(unroll, steps, backend, want):
  """'auto' unrolls on CPU in chunks of 10 steps (fully up to 10), and rolls the
  loop on accelerators; 'full'/True/0 unroll fully; an int is the chunk size."""
  assert langevin.resolve_unroll(unroll, steps, backend) == want


@pytest.mark.parametrize('unroll', [-1, 'fast', 2.5])
def test_resolve_unroll_rejects_bad_values(unroll):
  with pytest.raises(ValueError, match='mcmc_unroll'):
    langevin.resolve_unroll(unroll, 10, 'cpu')


# --- configuration checks ---------------------------------------------------------------

@pytest.mark.parametrize('key', langevin.REQUIRED_KEYS)
def test_missing_required_key_raises_naming_it(key):
  config = cfg()
  del config[key]
  with pytest.raises(ValueError, match=repr(key)):
    langevin.sample(quad_energy, linear_gen, Z0, Y0, KEY, config)


@pytest.mark.parametrize('changes,named', [
    (dict(mcmc_temp=0.0), 'mcmc_temp'),
    (dict(mcmc_temp=-1e-3), 'mcmc_temp'),
    (dict(epsilon=0.0), 'epsilon'),
    (dict(epsilon=-1e-4), 'epsilon'),
    (dict(update_latents=True, epsilon_latent=None), 'epsilon_latent'),
    (dict(update_latents=True, epsilon_latent=0.0), 'epsilon_latent'),
    (dict(update_latents=True, epsilon_latent=-5e-3), 'epsilon_latent'),
    (dict(clip_langevin_grad_res=True, max_langevin_norm_res=None),
     'max_langevin_norm_res'),
    (dict(clip_langevin_grad_res=True, max_langevin_norm_res=0.0), 'max_langevin_norm_res'),
    (dict(tau_res=-1.0), 'tau_res'),
    (dict(mcmc_steps=-1), 'mcmc_steps'),
    (dict(mcmc_update='parallel'), 'mcmc_update'),
])
def test_bad_value_raises_naming_the_key(changes, named):
  with pytest.raises(ValueError, match=named):
    langevin.sample(quad_energy, linear_gen, Z0, Y0, KEY, cfg(**changes))


def test_epsilon_latent_absent_raises_when_latents_move():
  config = cfg(update_latents=True)
  del config['epsilon_latent']
  with pytest.raises(ValueError, match='epsilon_latent'):
    langevin.Settings.from_config(config)


def test_clip_on_without_max_norm_key_raises():
  config = cfg(clip_langevin_grad_res=True)
  del config['max_langevin_norm_res']
  with pytest.raises(ValueError, match='max_langevin_norm_res'):
    langevin.Settings.from_config(config)


def test_optional_keys_default_and_configdict_is_accepted():
  """Only the five required keys are needed; a ConfigDict reads like a dict."""
  minimal = dict(mcmc_steps=2, mcmc_temp=1.0, epsilon=0.1, update_latents=False,
                 use_noise=False)
  s = langevin.Settings.from_config(minimal)
  assert s.tau_res == 0.0 and s.clip_langevin_grad_res is False
  assert s.mcmc_update == 'sequential' and s.mcmc_unroll == 'auto'
  assert langevin.Settings.from_config(ml_collections.ConfigDict(minimal)) == s
