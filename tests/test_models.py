"""The networks of SPEC §2: structure, defaults, input checks and inference-mode behaviour.

Shapes and parameter counts are checked abstractly (`jax.eval_shape`), so the 1024-wide
paper nets cost nothing; only narrow nets are actually run.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hat_ebm_jax import models
from hat_ebm_jax.models import layers

# The widths of the reference checkpoints (tf_original/README.md) and, from its
# manifest.json, their trainable-parameter counts and input/output shapes (batch 4).
REFERENCE_NETS = {
    'ebm_sngan32': (dict(ngf=32), 66848, (4, 32, 32, 3), (4, 1)),
    'ebm_sngan64': (dict(ngf=64), 76860, (4, 64, 64, 3), (4, 1)),
    'ebm_sngan128': (dict(ngf=64), 150716, (4, 128, 128, 3), (4, 1)),
    'gen_sngan32': (dict(nz=128, ngf=32), 126019, (4, 128), (4, 32, 32, 3)),
    'gen_sngan64': (dict(nz=128, ngf=64), 172195, (4, 128), (4, 64, 64, 3)),
    'gen_sngan128': (dict(nz=128, ngf=64), 250467, (4, 128), (4, 128, 128, 3)),
    'gen_decoder32': (dict(ngf=32), 67555, (4, 16, 16, 1), (4, 32, 32, 3)),
    'inf_encoder32': (dict(ngf=32), 67105, (4, 32, 32, 3), (4, 16, 16, 1)),
}
IMAGE_NETS = tuple(REFERENCE_NETS)
KEY = jax.random.PRNGKey(0)


def _abstract_variables(module, input_shape):
  return jax.eval_shape(module.init, KEY, jax.ShapeDtypeStruct(input_shape, jnp.float32))


def _random_variables(module, input_shape, seed=0):
  """Random variables of the right structure, without compiling `init` (slow on CPU):
  kernels ~ N(0, 1/fan_in), biases and BN parameters/statistics non-trivial."""
  abstract = _abstract_variables(module, input_shape)
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = path[-1].key
    if name == 'kernel':
      v = rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    elif name == 'var':
      v = rng.uniform(0.5, 1.5, s.shape)
    elif name == 'scale':
      v = 1.0 + 0.1 * rng.standard_normal(s.shape)
    else:  # bias, mean
      v = 0.1 * rng.standard_normal(s.shape)
    return v.astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def _num_params(variables) -> int:
  return int(sum(np.prod(v.shape) for v in jax.tree_util.tree_leaves(variables['params'])))


def _flat(variables, collection='params'):
  return {'/'.join(k): v for k, v in
          flax.traverse_util.flatten_dict(variables[collection]).items()}


@pytest.mark.parametrize('name', IMAGE_NETS)
def test_reference_width_net_has_checkpoint_parameter_count(name):
  """At the reference widths each net has the original's trainable-parameter count."""
  kwargs, num_params, in_shape, _ = REFERENCE_NETS[name]
  variables = _abstract_variables(models.create(name, **kwargs), in_shape)
  assert _num_params(variables) == num_params


@pytest.mark.parametrize('name', IMAGE_NETS)
def test_reference_width_net_has_checkpoint_output_shape(name):
  """At the reference widths each net maps the reference input shape to the output shape."""
  kwargs, _, in_shape, out_shape = REFERENCE_NETS[name]
  module = models.create(name, **kwargs)
  variables = _abstract_variables(module, in_shape)
  out = jax.eval_shape(module.apply, variables, jax.ShapeDtypeStruct(in_shape, jnp.float32))
  assert out.shape == out_shape
  assert out.dtype == jnp.float32


def test_reference_table_agrees_with_manifest(manifest):
  """The constants above are the manifest's (conformance data present)."""
  for name, (_, num_params, in_shape, out_shape) in REFERENCE_NETS.items():
    assert manifest[name]['num_params'] == num_params, name
    assert tuple(manifest[name]['input_shape']) == in_shape, name
    assert tuple(manifest[name]['output_shape']) == out_shape, name


# name -> (input shape, a parameter path, the shape it has at the paper's width)
PAPER_WIDTHS = {
    'ebm_sngan32': ((1, 32, 32, 3), 'conv_1/conv_1/kernel', (3, 3, 3, 256)),
    'ebm_sngan64': ((1, 64, 64, 3), 'lin_6/kernel', (1024, 1)),
    'ebm_sngan128': ((1, 128, 128, 3), 'lin_7/kernel', (1024, 1)),
    'gen_sngan32': ((1, 128), 'lin_1/kernel', (128, 4 * 4 * 256)),
    'gen_sngan64': ((1, 128), 'lin_1/kernel', (128, 4 * 4 * 1024)),
    'gen_sngan128': ((1, 128), 'lin_1/kernel', (128, 4 * 4 * 1024)),
    'gen_decoder32': ((1, 16, 16, 1), 'block1/conv_1/kernel', (3, 3, 1, 256)),
    'inf_encoder32': ((1, 32, 32, 3), 'block1/conv_1/kernel', (3, 3, 3, 256)),
}


@pytest.mark.parametrize('name', IMAGE_NETS)
def test_default_widths_are_the_papers(name):
  """Without arguments each net is built at the paper's width (ngf 256 at 32 px, 1024 at
  64/128 px, nz 128)."""
  in_shape, path, shape = PAPER_WIDTHS[name]
  variables = _abstract_variables(models.create(name), in_shape)
  assert _flat(variables)[path].shape == shape


def test_ebm64_default_stem_is_one_sixteenth_of_ngf():
  """The 64 px EBM's stem has ngf/16 = 64 channels at the default ngf 1024."""
  variables = _abstract_variables(models.create('ebm_sngan64'), (1, 64, 64, 3))
  assert _flat(variables)['conv_1/conv_1/kernel'].shape == (3, 3, 3, 64)


def test_default_out_factors():
  """SN-GAN generators default to out_factor 1 (pretrained, refinement), the decoder to 2."""
  assert models.create('gen_sngan32').out_factor == 1.0
  assert models.create('gen_sngan128').out_factor == 1.0
  assert models.create('gen_decoder32').out_factor == 2.0


def test_names_lists_all_nets():
  """`NAMES` holds the eight paper nets and the two toys."""
  assert set(models.NAMES) == set(IMAGE_NETS) | {'ebm_toy', 'gen_toy'}


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (1, 5, 7, 4), (2, 1, 1, 2), (1, 4, 4, 16)])
def test_upsample2x_equals_jax_image_resize_bilinear(shape):
  """The hand-written 2x kernel is `jax.image.resize(..., 'bilinear')` (TF's half-pixel
  centres, clamped edges)."""
  x = jax.random.normal(KEY, shape)
  b, h, w, c = shape
  want = jax.image.resize(x, (b, 2 * h, 2 * w, c), 'bilinear')
  got = layers.upsample2x(x)
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_avg_pool2_averages_2x2_blocks():
  """2x2 average pooling with stride 2."""
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  got = layers.avg_pool2(x)[0, :, :, 0]
  np.testing.assert_allclose(got, [[2.5, 4.5], [10.5, 12.5]])


def test_unknown_net_name_raises_naming_known_nets():
  """An unknown name raises ValueError that lists every known net."""
  with pytest.raises(ValueError, match='ebm_sngan_32') as info:
    models.create('ebm_sngan_32')
  for name in models.NAMES:
    assert name in str(info.value)


@pytest.mark.parametrize('name,kwarg', [('ebm_sngan32', 'nz'), ('gen_sngan32', 'widths'),
                                        ('inf_encoder32', 'out_factor')])
def test_unknown_keyword_argument_raises(name, kwarg):
  """An argument the net does not take raises ValueError naming it."""
  with pytest.raises(ValueError, match=kwarg):
    models.create(name, **{kwarg: 1})


@pytest.mark.parametrize('name', ['ebm_sngan64', 'gen_sngan128'])
def test_width_not_multiple_of_16_raises_for_64_and_128_px_nets(name):
  """64/128 px nets divide ngf by 16, so ngf must be a multiple of 16."""
  with pytest.raises(ValueError, match='ngf'):
    models.create(name, ngf=24)


BAD_INPUTS = [
    ('ebm_sngan32', (4, 32, 32)),        # rank 3
    ('ebm_sngan32', (4, 32, 32, 4)),     # 4 channels
    ('ebm_sngan32', (4, 30, 30, 3)),     # size not a multiple of 4
    ('ebm_sngan32', (4, 32, 16, 3)),     # not square
    ('ebm_sngan64', (4, 40, 40, 3)),     # size not a multiple of 32
    ('inf_encoder32', (4, 31, 31, 3)),   # odd size
    ('inf_encoder32', (4, 32, 32, 1)),   # 1 channel
    ('gen_sngan32', (4, 64)),            # wrong nz
    ('gen_sngan32', (4, 128, 1)),        # rank 3
    ('gen_decoder32', (4, 16, 16, 2)),   # 2 latent channels
    ('gen_decoder32', (4, 256)),         # flat latent
    ('ebm_toy', (4, 3)),                 # 3D points
    ('gen_toy', (4, 2, 1)),              # rank 3
]


@pytest.mark.parametrize('name,shape', BAD_INPUTS)
def test_wrong_input_shape_raises_naming_the_shape(name, shape):
  """Wrong rank, channel count or size raises ValueError that names the offending shape."""
  module = models.create(name, ngf=16)
  with pytest.raises(ValueError) as info:
    jax.eval_shape(module.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
  assert str(shape) in str(info.value)


@pytest.mark.parametrize('name,in_shape', [('ebm_sngan32', (2, 32, 32, 3)),
                                           ('gen_sngan32', (2, 128))])
def test_bfloat16_nets_run_and_return_float32(name, in_shape):
  """dtype='bfloat16' computes in bfloat16, keeps float32 parameters, returns float32
  close to the float32 net's output."""
  m32 = models.create(name, ngf=16)
  m16 = models.create(name, ngf=16, dtype='bfloat16')
  x = jax.random.normal(jax.random.PRNGKey(1), in_shape)
  variables = _random_variables(m32, in_shape)
  assert all(v.dtype == jnp.float32 for v in jax.tree_util.tree_leaves(
      jax.eval_shape(m16.init, KEY, x)))
  out16 = jax.jit(m16.apply)(variables, x)
  out32 = jax.jit(m32.apply)(variables, x)
  assert out16.dtype == jnp.float32
  assert out16.shape == out32.shape
  assert np.all(np.isfinite(out16))
  scale = np.abs(out32).max()
  assert np.abs(out16 - out32).max() <= 0.1 * scale


def test_unsupported_dtype_string_raises():
  """Only float32, bfloat16 and float16 are accepted as dtype strings."""
  with pytest.raises(ValueError, match='dtype'):
    models.create('ebm_sngan32', dtype='int8')


def test_toy_nets_work_on_2d_points():
  """ebm_toy maps points [B, 2] to energies [B, 1]; gen_toy maps latents [B, 2] to points
  [B, 2]; both come out of `init_variables`."""
  ebm, gen = models.create('ebm_toy', ngf=8), models.create('gen_toy', ngf=8)
  x = jax.random.normal(KEY, (5, 2))
  e = ebm.apply(models.init_variables(ebm, KEY), x)
  g = gen.apply(models.init_variables(gen, KEY), x)
  assert e.shape == (5, 1) and e.dtype == jnp.float32
  assert g.shape == (5, 2) and g.dtype == jnp.float32
  assert np.all(np.isfinite(e)) and np.all(np.isfinite(g))


@pytest.mark.parametrize('name,in_shape', [('ebm_sngan32', (5, 32, 32, 3)),
                                           ('gen_sngan32', (5, 128)),
                                           ('gen_decoder32', (5, 16, 16, 1))])
def test_same_input_alone_and_in_a_batch_gives_the_same_output(name, in_shape):
  """The original's determinism check: nets run in inference mode, so a sample's output
  does not depend on the rest of the batch (random BN statistics included)."""
  module = models.create(name, ngf=16)
  x = jax.random.normal(jax.random.PRNGKey(2), in_shape)
  variables = _random_variables(module, in_shape)
  apply = jax.jit(module.apply)
  batch = np.asarray(apply(variables, x))
  alone = np.asarray(apply(variables, x[2:3]))
  np.testing.assert_allclose(alone[0], batch[2], rtol=1e-5,
                             atol=1e-6 * np.abs(batch).max())


# --- the EBM's pooled conv: same function, cheaper form ---------------------------------

def test_pooled_conv_is_conv3_then_average_pool():
  """`PooledConv` (one 4x4 stride-2 conv) computes conv3 SAME then 2x2 average pooling
  with the same parameters."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 5))
  pooled = layers.PooledConv(7)
  variables = pooled.init(jax.random.PRNGKey(1), x)
  variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)  # nonzero bias
  plain = layers.conv(7, 3, 'conv')
  want = layers.avg_pool2(plain.apply(variables, x))
  got = pooled.apply(variables, x)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv4x4_stride2_gradients_match_autodiff_of_the_plain_conv():
  """The phase-by-phase input gradient and the kernel gradient equal what JAX derives
  for `lax.conv_general_dilated` (stride 2, padding 1)."""
  kx, kk, kc = jax.random.split(jax.random.PRNGKey(2), 3)
  x = jax.random.normal(kx, (3, 6, 10, 4))
  k4 = jax.random.normal(kk, (4, 4, 4, 5))
  ct = jax.random.normal(kc, (3, 3, 5, 5))
  plain = lambda x, k: jax.lax.conv_general_dilated(  # pylint: disable=g-long-lambda
      x, k, (2, 2), ((1, 1), (1, 1)), dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  out, vjp = jax.vjp(layers.conv4x4_stride2, x, k4)
  out_ref, vjp_ref = jax.vjp(plain, x, k4)
  np.testing.assert_allclose(out, out_ref, rtol=1e-6, atol=1e-6)
  for got, want in zip(vjp(ct), vjp_ref(ct)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
