"""Specification of `hat_ebm_jax.fid`: the FID Inception network, its weights, statistics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hat_ebm_jax import fid
from hat_ebm_jax import metrics
from hat_ebm_jax.fid import convert_weights
from hat_ebm_jax.fid import inception


def _torch_units():
  """The BasicConv2d units of pytorch-fid's fid_inception_v3 as `(name, cin, cout, kh, kw)`.

  Written from torchvision's Inception3 (InceptionA..E) independently of the Flax code.
  """
  units = [('Conv2d_1a_3x3', 3, 32, 3, 3), ('Conv2d_2a_3x3', 32, 32, 3, 3),
           ('Conv2d_2b_3x3', 32, 64, 3, 3), ('Conv2d_3b_1x1', 64, 80, 1, 1),
           ('Conv2d_4a_3x3', 80, 192, 3, 3)]

  def a(n, cin, pool):
    return [(f'{n}.branch1x1', cin, 64, 1, 1), (f'{n}.branch5x5_1', cin, 48, 1, 1),
            (f'{n}.branch5x5_2', 48, 64, 5, 5), (f'{n}.branch3x3dbl_1', cin, 64, 1, 1),
            (f'{n}.branch3x3dbl_2', 64, 96, 3, 3), (f'{n}.branch3x3dbl_3', 96, 96, 3, 3),
            (f'{n}.branch_pool', cin, pool, 1, 1)]

  def c(n, c7):
    return [(f'{n}.branch1x1', 768, 192, 1, 1), (f'{n}.branch7x7_1', 768, c7, 1, 1),
            (f'{n}.branch7x7_2', c7, c7, 1, 7), (f'{n}.branch7x7_3', c7, 192, 7, 1),
            (f'{n}.branch7x7dbl_1', 768, c7, 1, 1), (f'{n}.branch7x7dbl_2', c7, c7, 7, 1),
            (f'{n}.branch7x7dbl_3', c7, c7, 1, 7), (f'{n}.branch7x7dbl_4', c7, c7, 7, 1),
            (f'{n}.branch7x7dbl_5', c7, 192, 1, 7), (f'{n}.branch_pool', 768, 192, 1, 1)]

  def e(n, cin):
    return [(f'{n}.branch1x1', cin, 320, 1, 1), (f'{n}.branch3x3_1', cin, 384, 1, 1),
            (f'{n}.branch3x3_2a', 384, 384, 1, 3), (f'{n}.branch3x3_2b', 384, 384, 3, 1),
            (f'{n}.branch3x3dbl_1', cin, 448, 1, 1), (f'{n}.branch3x3dbl_2', 448, 384, 3, 3),
            (f'{n}.branch3x3dbl_3a', 384, 384, 1, 3),
            (f'{n}.branch3x3dbl_3b', 384, 384, 3, 1), (f'{n}.branch_pool', cin, 192, 1, 1)]

  units += a('Mixed_5b', 192, 32) + a('Mixed_5c', 256, 64) + a('Mixed_5d', 288, 64)
  units += [('Mixed_6a.branch3x3', 288, 384, 3, 3), ('Mixed_6a.branch3x3dbl_1', 288, 64, 1, 1),
            ('Mixed_6a.branch3x3dbl_2', 64, 96, 3, 3),
            ('Mixed_6a.branch3x3dbl_3', 96, 96, 3, 3)]
  units += c('Mixed_6b', 128) + c('Mixed_6c', 160) + c('Mixed_6d', 160) + c('Mixed_6e', 192)
  units += [('Mixed_7a.branch3x3_1', 768, 192, 1, 1), ('Mixed_7a.branch3x3_2', 192, 320, 3, 3),
            ('Mixed_7a.branch7x7x3_1', 768, 192, 1, 1),
            ('Mixed_7a.branch7x7x3_2', 192, 192, 1, 7),
            ('Mixed_7a.branch7x7x3_3', 192, 192, 7, 1),
            ('Mixed_7a.branch7x7x3_4', 192, 192, 3, 3)]
  units += e('Mixed_7b', 1280) + e('Mixed_7c', 2048)
  return units


def _synthetic_state_dict(seed=0):
  """Random arrays under the keys and shapes of pt_inception-2015-12-05-6726825d.pth."""
  rng = np.random.RandomState(seed)
  sd = {}
  for name, cin, cout, kh, kw in _torch_units():
    sd[f'{name}.conv.weight'] = (rng.randn(cout, cin, kh, kw)
                                 * np.sqrt(2.0 / (cin * kh * kw))).astype(np.float32)
    sd[f'{name}.bn.weight'] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f'{name}.bn.bias'] = rng.uniform(-0.1, 0.1, cout).astype(np.float32)
    sd[f'{name}.bn.running_mean'] = rng.uniform(-0.1, 0.1, cout).astype(np.float32)
    sd[f'{name}.bn.running_var'] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    sd[f'{name}.bn.num_batches_tracked'] = np.array(0, np.int64)
  sd['fc.weight'] = rng.randn(1008, 2048).astype(np.float32)
  sd['fc.bias'] = np.zeros(1008, np.float32)
  return sd


def test_pool3_features_are_2048_for_any_input_resolution():
  module = inception.FIDInception()
  for shape in ((2, 32, 32, 3), (1, 299, 299, 3), (3, 64, 48, 3)):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)
    out = jax.eval_shape(module.apply, variables, x)
    assert out.shape == (shape[0], inception.FEATURE_DIM)


def test_layer_shapes_are_those_of_pytorch_fid_fid_inception_v3():
  expected = {}
  for name, cin, cout, kh, kw in _torch_units():
    p = name.replace('.', '/')
    expected[f'params/{p}/conv/kernel'] = (kh, kw, cin, cout)  # HWIO
    for leaf in ('params/{}/bn/scale', 'params/{}/bn/bias', 'batch_stats/{}/bn/mean',
                 'batch_stats/{}/bn/var'):
      expected[leaf.format(p)] = (cout,)
  assert inception.variable_shapes() == expected


def test_parameter_count_is_torchvision_inception_v3_without_fc_and_aux_logits():
  # torchvision inception_v3 (1000 classes, aux_logits) has 27,161,264 parameters.
  #   fc:        2048 * 1000 + 1000                                    = 2,049,000
  #   AuxLogits: conv0 768*128 + 2*128 (BN)                            =    98,560
  #              conv1 128*768*5*5 + 2*768                             = 2,459,136
  #              fc    768*1000 + 1000                                 =   769,000
  # 27,161,264 - 2,049,000 - 3,326,696 = 21,785,568 conv weights + BN scale/bias.
  # (The FID variant's 1008-way fc, 2048*1008 + 1008 = 2,065,392, is not needed for pool_3
  # and is not part of the module.) BN running mean+var add 2 * 17,216 = 34,432 scalars.
  shapes = inception.variable_shapes()
  n_params = sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith('params/'))
  n_stats = sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith('batch_stats/'))
  assert n_params == 21_785_568
  assert n_stats == 34_432
  assert n_params == sum(ci * co * kh * kw + 2 * co for _, ci, co, kh, kw in _torch_units())


def test_converter_round_trip_on_a_synthetic_state_dict(tmp_path):
  sd = _synthetic_state_dict()
  src, out = tmp_path / 'state_dict.npz', tmp_path / 'weights.npz'
  np.savez(src, **sd)
  assert convert_weights.main([f'--pth={src}', f'--out={out}']) == 0

  module, variables = inception.load_fid_inception(str(out))
  np.testing.assert_array_equal(  # OIHW -> HWIO
      variables['params']['Mixed_6b']['branch7x7_2']['conv']['kernel'],
      sd['Mixed_6b.branch7x7_2.conv.weight'].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(variables['params']['Conv2d_1a_3x3']['bn']['scale'],
                                sd['Conv2d_1a_3x3.bn.weight'])
  np.testing.assert_array_equal(variables['batch_stats']['Mixed_7c']['branch_pool']['bn']['var'],
                                sd['Mixed_7c.branch_pool.bn.running_var'])
  assert inception.count_parameters(variables) == 21_785_568 + 34_432

  images = np.random.RandomState(0).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
  features = np.asarray(fid.make_apply_fn(module, variables)(images))
  assert features.shape == (1, 2048)
  assert np.all(np.isfinite(features)) and np.all(features >= 0)  # mean of ReLU outputs
  assert features.max() > 0


def test_missing_weights_raise_file_not_found_with_where_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError) as info:
    inception.load_fid_inception(str(tmp_path / 'nope.npz'))
  assert 'pt_inception-2015-12-05-6726825d.pth' in str(info.value)
  assert inception.WEIGHTS_URL in str(info.value)
  assert 'hat_ebm_jax.fid.convert_weights' in str(info.value)


def test_weights_that_do_not_fit_raise_value_error_listing_mismatches(tmp_path):
  flat = {k: np.zeros(s, np.float32) for k, s in inception.variable_shapes().items()}
  del flat['params/Mixed_5b/branch1x1/conv/kernel']
  flat['params/Conv2d_1a_3x3/conv/kernel'] = np.zeros((3, 3, 3, 16), np.float32)
  flat['params/fc/kernel'] = np.zeros((2048, 1008), np.float32)
  path = str(tmp_path / 'bad.npz')
  inception.save_variables(path, flat)
  with pytest.raises(ValueError) as info:
    inception.load_fid_inception(path)
  msg = str(info.value)
  assert 'missing: params/Mixed_5b/branch1x1/conv/kernel' in msg
  assert 'unexpected: params/fc/kernel' in msg
  assert 'params/Conv2d_1a_3x3/conv/kernel: file (3, 3, 3, 16) != net (3, 3, 3, 32)' in msg


def test_converter_rejects_keys_outside_the_fid_network():
  sd = _synthetic_state_dict()
  sd['AuxLogits.conv0.conv.weight'] = np.zeros((128, 768, 1, 1), np.float32)
  sd['Mixed_5b.extra'] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match='Mixed_5b.extra'):
    convert_weights.convert_state_dict(sd)


def test_pool_branches_average_without_padding_except_mixed_7c_which_max_pools():
  ones = jnp.ones((1, 5, 5, 2))
  np.testing.assert_allclose(inception._avg_pool_3x3_same(ones), ones)  # corners stay 1
  spike = jnp.zeros((1, 5, 5, 1)).at[0, 0, 0, 0].set(3.0)
  pooled = np.asarray(inception._max_pool_3x3_same(spike))[0, :, :, 0]
  np.testing.assert_array_equal(pooled[:2, :2], 3.0)  # max spreads the spike unchanged
  assert pooled.sum() == 12.0

  pools = {}

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, inception.FIDInceptionE):
      pools[context.module.name] = context.module.pool
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(inception.FIDInception().init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct((1, 75, 75, 3), jnp.float32))
  assert pools == {'Mixed_7b': 'avg', 'Mixed_7c': 'max'}


def test_resize_is_torch_bilinear_with_half_pixel_centres():
  def torch_bilinear_1d(v, out):  # F.interpolate(mode='bilinear', align_corners=False)
    n = len(v)
    src = np.maximum((np.arange(out) + 0.5) * n / out - 0.5, 0.0)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    lam = (src - i0)[:, None]
    return (1 - lam) * v[i0] + lam * v[i1]

  img = np.random.RandomState(0).rand(1, 7, 5, 3).astype(np.float32)
  got = np.asarray(inception.resize_bilinear(jnp.asarray(img)))
  rows = np.stack([torch_bilinear_1d(img[0, :, j, :], 299) for j in range(5)], axis=1)
  want = np.stack([torch_bilinear_1d(rows[i], 299) for i in range(299)], axis=0)
  assert got.shape == (1, 299, 299, 3)
  np.testing.assert_allclose(got[0], want, atol=1e-5)


def test_compute_statistics_batches_pads_and_matches_numpy():
  rng = np.random.RandomState(1)
  images = rng.randn(23, 4, 4, 3).astype(np.float32)
  apply_fn = lambda x: x.reshape(x.shape[0], -1)[:, :6] * 2.0
  batches = (images[i:i + 10] for i in range(0, 23, 10))  # 10, 10, 3
  mu, sigma = fid.compute_statistics(apply_fn, batches)
  feats = images.reshape(23, -1)[:, :6].astype(np.float64) * 2.0
  np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-5, atol=1e-5)


def test_fid_score_is_the_frechet_distance_of_the_statistics():
  rng = np.random.RandomState(2)
  s1 = metrics.feature_statistics(rng.randn(100, 5))
  s2 = metrics.feature_statistics(rng.randn(100, 5) + 1.0)
  assert fid.fid_score(s1, s1) == pytest.approx(0.0, abs=1e-9)
  assert fid.fid_score(s1, s2) == metrics.frechet_distance(*s1, *s2)


def test_reference_statistics_are_cached_with_the_weights_fingerprint(tmp_path):
  """One path for evaluation and tests: `fid.reference_statistics` computes the
  statistics of `num_eval_samples` images of `config.split` through the input pipeline
  (global batches over `data`), caches them with the weights' fingerprint, reads the
  cache back for the same fingerprint and recomputes it for another."""
  from hat_ebm_jax import config_lib, sharding  # pylint: disable=g-import-not-at-top
  from tests.conftest import load, with_overrides  # pylint: disable=g-import-not-at-top
  c = with_overrides(load('digits', 'eval'), num_eval_samples=8, eval_batch_size=4,
                     data_dir=str(tmp_path / 'tfds'))
  config_lib.validate(c)
  mesh = sharding.create_mesh()
  calls = []

  def features(x):
    calls.append(x.shape)
    return x.reshape(x.shape[0], -1)[:, :5] * 2.0

  (mu, sigma), info = fid.reference_statistics(c, tmp_path / 'w', features, mesh, 'aa', True)
  assert calls == [(4, 16, 16, 1)] * 2 and info['cached'] is False
  path = tmp_path / 'w' / 'eval' / 'fid_stats_digits_train_16_8.npz'
  assert info['file'] == str(path)
  with np.load(path) as z:
    assert str(z['fid_weights_sha']) == 'aa' and int(z['seed']) == fid.stats.REFERENCE_SEED
  from hat_ebm_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  it = input_pipeline.create_iterator(c, split='train', batch_size=4,
                                      seed=fid.stats.REFERENCE_SEED)
  want = np.concatenate([next(it), next(it)]).reshape(8, -1)[:, :5].astype(np.float64) * 2
  np.testing.assert_allclose(mu, want.mean(0), rtol=1e-6)
  np.testing.assert_allclose(sigma, np.cov(want, rowvar=False), rtol=1e-5, atol=1e-8)

  (mu2, _), info = fid.reference_statistics(c, tmp_path / 'w', features, mesh, 'aa', True)
  assert len(calls) == 2 and info['cached'] is True  # read back, nothing computed
  np.testing.assert_array_equal(mu2, mu)
  (_, _), info = fid.reference_statistics(c, tmp_path / 'w', features, mesh, 'bb', True)
  assert len(calls) == 4 and info['cached'] is False  # other weights: recomputed
