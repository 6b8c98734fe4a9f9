"""The networks of docs/algorithm.md §2: structure, defaults, input checks, inference mode.

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
  """The constants above are the manifest's."""
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


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (1, 5, 7, 4), (2, 1, 1, 2), (1, 2, 3, 2)])
def test_upsample2x_gradient_is_the_transpose_of_jax_image_resize(shape):
  """The hand-written transpose (`_up_axis_transpose`, clamped edges included) is the
  gradient autodiff gives for `jax.image.resize(..., 'bilinear')`."""
  x = jax.random.normal(KEY, shape)
  b, h, w, c = shape
  g = jax.random.normal(jax.random.PRNGKey(9), (b, 2 * h, 2 * w, c))
  assert layers.fast_grad_applies(shape, jnp.float32, 'winograd')
  _, vjp = jax.vjp(layers.upsample2x_fast_grad, x)
  _, vjp_ref = jax.vjp(lambda v: jax.image.resize(v, (b, 2 * h, 2 * w, c), 'bilinear'), x)
  np.testing.assert_allclose(vjp(g)[0], vjp_ref(g)[0], rtol=0, atol=1e-5)


def test_avg_pool2_averages_2x2_blocks():
  """2x2 average pooling with stride 2."""
  x = jnp.arange(16.0).reshape(1, 4, 4, 1)
  got = layers.avg_pool2(x)[0, :, :, 0]
  np.testing.assert_allclose(got, [[2.5, 4.5], [10.5, 12.5]])


def test_avg_pool2_keeps_a_narrow_dtype():
  """In bfloat16 the pooling is summed in bfloat16 and returns bfloat16 (no float32
  copy of its input), within bfloat16 rounding of the float32 average."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 6, 3))
  got = layers.avg_pool2(x.astype(jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), layers.avg_pool2(x),
                             rtol=2e-2, atol=2e-2)


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


@pytest.mark.parametrize('algorithm', ['direct', 'winograd', 'winograd_large'])
def test_pooled_conv_is_conv3_then_average_pool_in_every_form(algorithm):
  """Every form of `PooledConv` gives conv3 SAME then pooling, parameter gradients
  included, with the same parameters: the 4x4 stride-2 conv with XLA's gradient
  ('direct'), the box filter then a stride-2 3x3 conv by phases ('winograd' on this
  map), and the 4x4 conv with its input gradient by phases ('winograd_large' on a map
  too small for the box filter)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 8, 5))
  pooled = layers.PooledConv(7, algorithm=algorithm)
  assert layers.box_pool_applies(x.shape, 7, jnp.float32, algorithm) == (
      algorithm == 'winograd')
  variables = jax.tree_util.tree_map(lambda v: v + 0.1,
                                     pooled.init(jax.random.PRNGKey(1), x))
  plain = lambda v, x: layers.avg_pool2(layers.conv(7, 3, 'conv').apply(v, x))
  ct = jax.random.normal(jax.random.PRNGKey(2), (2, 6, 4, 7))
  got, vjp = jax.vjp(pooled.apply, variables, x)
  want, vjp_ref = jax.vjp(plain, variables, x)
  assert _max_rel(got, want) < 1e-5
  jax.tree_util.tree_map(lambda g, w: _assert_rel(g, w, 1e-5), vjp(ct), vjp_ref(ct))


def _assert_rel(got, want, tol):
  assert _max_rel(got, want) < tol


@pytest.mark.parametrize('shape', [(2, 32, 32, 3), (3, 10, 6, 4), (1, 2, 2, 1)])
def test_pooled_conv3x3_and_its_gradients_equal_conv_then_pool(shape):
  """`pooled_conv3x3` (box filter, then four phase convs) and its input and kernel
  gradients equal those of conv3 SAME then 2x2 average pooling, on square, oblong and
  single-output maps."""
  kx, kk, kc = jax.random.split(jax.random.PRNGKey(5), 3)
  x = jax.random.normal(kx, shape)
  k = jax.random.normal(kk, (3, 3, shape[-1], 6))
  ct = jax.random.normal(kc, (shape[0], shape[1] // 2, shape[2] // 2, 6))
  plain = lambda x, k: layers.avg_pool2(jax.lax.conv_general_dilated(  # pylint: disable=g-long-lambda
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
  _assert_same_output_and_vjp(layers.pooled_conv3x3, plain, x, k, ct)


def test_fast_upsample_gradient_applies_where_winograd_does_on_cpu():
  """The hand-written upsampling gradient runs under the CPU algorithms in float32;
  under 'winograd_large' only into 16x16 or larger maps of 64 or more channels (the
  paper generators' block3 and block4, not the digits nets)."""
  applies = layers.fast_grad_applies
  assert applies((2, 8, 8, 256), jnp.float32, 'winograd_large')
  assert applies((2, 16, 16, 64), jnp.float32, 'winograd_large')
  assert not applies((2, 4, 4, 256), jnp.float32, 'winograd_large')
  assert not applies((2, 8, 8, 32), jnp.float32, 'winograd_large')  # digits
  assert not applies((2, 8, 8, 256), jnp.bfloat16, 'winograd_large')
  assert not applies((2, 8, 8, 256), jnp.float32, 'direct')
  assert applies((2, 1, 1, 2), jnp.float32, 'winograd')


def test_box_pool_applies_where_winograd_does_on_cpu():
  """The box-filter form runs under the CPU algorithms only, in float32 on even maps;
  'winograd_large' (CPU 'auto') only on the maps where Winograd runs (16x16 or more,
  64 or more channels): the paper EBMs' stem and block2, not the digits nets."""
  applies = layers.box_pool_applies
  assert applies((2, 32, 32, 256), 256, jnp.float32, 'winograd_large')
  assert applies((2, 16, 16, 256), 256, jnp.float32, 'winograd_large')
  assert not applies((2, 16, 16, 32), 32, jnp.float32, 'winograd_large')  # digits
  assert not applies((2, 8, 8, 256), 256, jnp.float32, 'winograd_large')
  assert not applies((2, 32, 32, 256), 256, jnp.bfloat16, 'winograd_large')
  assert not applies((2, 32, 32, 256), 256, jnp.float32, 'direct')
  assert applies((2, 6, 6, 3), 3, jnp.float32, 'winograd')
  assert not applies((2, 5, 6, 3), 3, jnp.float32, 'winograd')


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


# --- Winograd F(4x4, 3x3): same function, a quarter of the multiplies ---------------------

def _max_rel(got, want):
  return float(jnp.abs(got - want).max() / jnp.abs(want).max())


@pytest.mark.parametrize('shape', [(2, 8, 8, 3), (3, 12, 20, 16), (1, 4, 4, 1)])
def test_winograd_conv3x3_and_its_gradients_equal_the_direct_conv(shape):
  """Output, input gradient and kernel gradient of `winograd_conv3x3` equal those of
  `lax.conv_general_dilated` (3x3 SAME) to float32 rounding, on square and oblong maps."""
  kx, kk, kc = jax.random.split(jax.random.PRNGKey(3), 3)
  x = jax.random.normal(kx, shape)
  k = jax.random.normal(kk, (3, 3, shape[-1], 6))
  ct = jax.random.normal(kc, shape[:-1] + (6,))
  plain = lambda x, k: jax.lax.conv_general_dilated(  # pylint: disable=g-long-lambda
      x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  _assert_same_output_and_vjp(layers.winograd_conv3x3, plain, x, k, ct)


def _assert_same_output_and_vjp(fn, plain, x, k, ct):
  """`fn(x, k)` and its input and kernel cotangents for `ct` equal `plain`'s to 1e-5."""
  out, vjp = jax.vjp(fn, x, k)
  out_ref, vjp_ref = jax.vjp(plain, x, k)
  assert _max_rel(out, out_ref) < 1e-5
  for got, want in zip(vjp(ct), vjp_ref(ct)):
    assert _max_rel(got, want) < 1e-5


def test_winograd_conv_has_nn_conv_parameters_and_initial_values():
  """`Conv3x3` is a drop-in for `nn.Conv`: same parameter tree, same initial values, so
  checkpoints and the original's weights fit either."""
  x = jnp.ones((1, 8, 8, 4))
  for alg in ('winograd', 'winograd_large'):
    a = layers.conv(5, 3, 'c', algorithm=alg).init(jax.random.PRNGKey(4), x)
    b = layers.conv(5, 3, 'c', algorithm='direct').init(jax.random.PRNGKey(4), x)
    assert isinstance(layers.conv(5, 3, 'c', algorithm=alg), layers.Conv3x3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_winograd_applies_where_it_was_measured_faster():
  """'winograd' takes every float32 map with sides divisible by 4; 'winograd_large' (CPU
  'auto') only 16x16 or larger maps with 64 or more input and output channels."""
  applies = layers.winograd_applies
  assert applies((2, 8, 8, 3), 3, jnp.float32, 'winograd')
  assert not applies((2, 6, 8, 3), 3, jnp.float32, 'winograd')
  assert not applies((2, 8, 8, 3), 3, jnp.bfloat16, 'winograd')
  assert not applies((2, 32, 32, 256), 256, jnp.float32, 'direct')
  assert applies((2, 32, 32, 256), 256, jnp.float32, 'winograd_large')
  assert applies((2, 16, 16, 64), 64, jnp.float32, 'winograd_large')
  assert not applies((2, 8, 8, 256), 256, jnp.float32, 'winograd_large')
  assert not applies((2, 32, 32, 256), 3, jnp.float32, 'winograd_large')
  assert not applies((2, 32, 32, 3), 256, jnp.float32, 'winograd_large')


def test_conv_algorithm_auto_is_winograd_on_cpu_only():
  assert models.resolve_conv_algorithm('auto', 'cpu') == 'winograd_large'
  assert models.resolve_conv_algorithm('auto', 'gpu') == 'direct'
  assert models.resolve_conv_algorithm('auto', 'tpu') == 'direct'
  assert models.resolve_conv_algorithm('winograd', 'tpu') == 'winograd'
  with pytest.raises(ValueError, match="conv_algorithm must be one of"):
    models.create('ebm_sngan32', ngf=8, conv_algorithm='fft')


@pytest.mark.parametrize('name', [
    'ebm_sngan32',
    # The quick tier checks Winograd in gen_sngan32 against the original's output
    # (test_convert); its 64-channel function check is the slowest of these.
    pytest.param('gen_sngan32', marks=pytest.mark.slow),
    'gen_decoder32', 'inf_encoder32'])
def test_winograd_nets_compute_the_direct_nets_function(name, monkeypatch):
  """At 64 channels `conv_algorithm='winograd_large'` runs some 3x3 convs by Winograd, and
  the net's output and input gradient (what Langevin sampling uses) match direct convs.

  Winograd's rounding (about 1e-5 of a conv's largest output, 10x direct's) switches a
  ReLU whose input is that close to 0 more often, and each switch moves the gradient of
  the few inputs under it: measured against float64, the decoder's input gradient is off
  by 2e-6 at the median entry and by up to 8e-3 at the worst (the worst entries are where
  a ReLU switched); 5e-4 in L2 (direct float32: 5e-7). So the bulk is held to 1e-5 and
  the L2 norm to 2e-3."""
  calls = []
  real = layers.winograd_conv3x3
  monkeypatch.setattr(layers, 'winograd_conv3x3', lambda x, k: calls.append(1) or real(x, k))
  direct = models.create(name, ngf=64, conv_algorithm='direct')
  wino = models.create(name, ngf=64, conv_algorithm='winograd_large')
  variables = models.init_variables(direct, jax.random.PRNGKey(5))
  x = jax.random.normal(jax.random.PRNGKey(6), (2,) + models.input_shape(direct))
  w = jax.random.normal(jax.random.PRNGKey(7), jax.eval_shape(direct.apply, variables, x).shape)
  f = lambda m: lambda x: jnp.vdot(m.apply(variables, x), w)  # pylint: disable=g-long-lambda
  (v_d, g_d), (v_w, g_w) = (jax.value_and_grad(f(m))(x) for m in (direct, wino))
  assert calls, 'no conv ran by Winograd'
  assert abs(float(v_w - v_d)) / abs(float(v_d)) < 1e-4
  diff = jnp.abs(g_w - g_d)
  assert float(jnp.median(diff) / jnp.abs(g_d).mean()) < 1e-5
  assert float(jnp.linalg.norm(g_w - g_d) / jnp.linalg.norm(g_d)) < 2e-3
