"""`config.dtype = 'bfloat16'`: networks compute in bfloat16 while parameters, optimizer
states, the bank, the Langevin states and energies / T stay float32."""

import collections
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hat_ebm_jax import config_lib, langevin, langevin_programs, models, modes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _dtypes(tree):
  return collections.Counter(str(x.dtype) for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize('mode', ['synthesis', 'joint'])
def test_bfloat16_training_keeps_float32_state(mode):
  """Checked abstractly: params, Adam moments, EMA, bank, frozen nets and Langevin
  results are float32 before and after a training step."""
  c = config_lib.load_config_file(os.path.join(REPO, 'configs', 'tiny.py'))
  c.dtype = 'bfloat16'
  c.mode = mode
  gen_v = None
  if mode == 'joint':  # only shapes matter here
    gen_v = jax.eval_shape(lambda: models.init_variables(
        models.make_generator(c), jax.random.PRNGKey(0), c.image_size))
  m = modes.create(c, gen_variables=gen_v)
  state = jax.eval_shape(m.init_state, jax.random.PRNGKey(0))
  batch = jax.ShapeDtypeStruct((c.batch_size, c.image_size, c.image_size, c.nch),
                               jnp.float32)
  new, metrics = jax.eval_shape(m.train_step, state, batch)
  for s in (state, new):
    for field in ('params', 'opt_state', 'ema', 'bank', 'batch_stats', 'frozen'):
      assert set(_dtypes(getattr(s, field))) <= {'float32', 'int32', 'bool'}, field
  r = jax.eval_shape(m.langevin_step, state, batch)
  assert set(_dtypes(r)) == {'float32'}
  assert metrics['ebm_loss'].dtype == jnp.float32


def test_bfloat16_generator_follows_latent_moves():
  """A bfloat16 generator changes G(z) under a latent move as the float32 net does."""
  g16 = models.create('gen_sngan32', ngf=16, nz=8, bottom=2, dtype='bfloat16')
  g32 = models.create('gen_sngan32', ngf=16, nz=8, bottom=2)
  v = models.init_variables(g32, jax.random.PRNGKey(0), 16)
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
  dz = 0.05 * jax.random.normal(jax.random.PRNGKey(2), (4, 8))
  d16 = np.asarray(g16.apply(v, z + dz) - g16.apply(v, z))
  d32 = np.asarray(g32.apply(v, z + dz) - g32.apply(v, z))
  cos = np.sum(d16 * d32) / np.linalg.norm(d16) / np.linalg.norm(d32)
  assert cos > 0.9


def test_bfloat16_langevin_moves_agree_with_float32():
  """One Langevin step at T = 1e-8 with bfloat16 nets moves y like the float32 nets."""
  ebm16 = models.create('ebm_sngan32', ngf=16, dtype='bfloat16')
  ebm32 = models.create('ebm_sngan32', ngf=16)
  gen = models.create('gen_sngan32', ngf=16)
  ev = models.init_variables(ebm32, jax.random.PRNGKey(0))
  gv = models.init_variables(gen, jax.random.PRNGKey(1))
  z = jax.random.normal(jax.random.PRNGKey(2), (4, 128))
  y = jnp.zeros((4, 32, 32, 3))
  config = dict(mcmc_steps=2, mcmc_temp=1e-8, epsilon=5e-4, update_latents=False,
                use_noise=False, clip_langevin_grad_res=True, max_langevin_norm_res=2.5)
  moves = [np.asarray(langevin_programs.sample(langevin.nets(e, ev), langevin.nets(gen, gv),
                                               z, y, jax.random.PRNGKey(3), config).y)
           for e in (ebm16, ebm32)]
  assert np.all(np.isfinite(moves[0]))
  cos = np.sum(moves[0] * moves[1]) / np.linalg.norm(moves[0]) / np.linalg.norm(moves[1])
  assert cos > 0.98


def _conv_kernels(variables, conv: bool = True):
  """The conv kernels (4-D `kernel` leaves) of `variables`; with `conv=False`, the rest."""
  return [l for p, l in jax.tree_util.tree_leaves_with_path(variables)
          if (p[-1].key == 'kernel' and len(l.shape) == 4) == conv]


_NETS = [('ebm_sngan32', (3, 32, 32, 3)), ('ebm_sngan64', (2, 64, 64, 3)),
         ('gen_sngan32', (3, 128)), ('gen_decoder32', (2, 16, 16, 1)),
         ('inf_encoder32', (2, 32, 32, 3))]


@pytest.mark.parametrize('name,in_shape', _NETS)
def test_conv_kernels_cast_before_the_call_give_the_same_numbers(name, in_shape):
  """`models.compute_variables` casts a bfloat16 net's conv kernels to bfloat16 (what
  its convs read) and nothing else; the net's output, its input gradient and the
  float32 parameter gradients through the cast are bit for bit those of the float32
  variables. A float32 net gets its variables back unchanged."""
  kw = dict(ngf=64) if '64' in name else dict(ngf=16)
  net = models.create(name, dtype='bfloat16', **kw)
  size = 64 if '64' in name else 32
  v = models.init_variables(net, jax.random.PRNGKey(0), size)
  x = jax.random.normal(jax.random.PRNGKey(1), in_shape)
  cast = models.compute_variables(net, v)
  kernels, others = _conv_kernels(cast, True), _conv_kernels(cast, False)
  assert kernels and all(k.dtype == jnp.bfloat16 for k in kernels)
  assert all(l.dtype == jnp.float32 for l in others)
  energy = lambda vv, xx: jnp.sum(net.apply(vv, xx).astype(jnp.float32) ** 2)
  want = jax.grad(energy, argnums=(0, 1))(v, x)
  got = jax.grad(lambda vv, xx: energy(models.compute_variables(net, vv), xx),
                 argnums=(0, 1))(v, x)
  np.testing.assert_array_equal(net.apply(cast, x), net.apply(v, x))
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  f32 = models.create(name, **kw)
  assert models.compute_variables(f32, v) is v


def test_the_sampler_reads_conv_kernels_in_the_nets_dtype():
  """A bfloat16 run's sampler nets carry bfloat16 conv kernels (cast once, outside the
  Langevin loop), so does the loop body the TPU plan compiles; a float32 run's carry
  its float32 parameters as they are."""
  from hat_ebm_jax.plan import programs  # pylint: disable=g-import-not-at-top
  c = config_lib.load_config_file(os.path.join(REPO, 'configs', 'tiny.py'))
  for dtype, want in (('bfloat16', jnp.bfloat16), ('float32', jnp.float32)):
    c.dtype = dtype
    m = modes.create(c)
    state = jax.eval_shape(m.init_state, jax.random.PRNGKey(0))
    for name, fn in (('ebm', m.ebm_apply_fn), ('gen', m.gen_apply_fn)):
      for v in (jax.eval_shape(lambda s: fn(s).args[0], state),
                programs._variables(m, state, name, False)):  # pylint: disable=protected-access
        kernels = _conv_kernels(v)
        assert kernels and {k.dtype for k in kernels} == {jnp.dtype(want)}, (dtype, name)
