"""Specification of `hat_ebm_jax.metrics`: Fréchet distance, digits_fd, MMD, OOD AUROC."""

import os

import numpy as np
import pytest
import sklearn.metrics

from hat_ebm_jax import digits_classifier, metrics

IMAGE_SIZE = 16


def _random_covariance(rng, d, n=None):
  """Sample covariance of n (default 3d) Gaussian points with random correlations."""
  a = rng.randn(d, d)
  x = rng.randn(n or 3 * d, d) @ a
  return np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(s):
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _independent_trace_sqrt(s1, s2):
  """tr sqrt(s1 s2) = sum of sqrt of the eigenvalues of sqrt(s1) s2 sqrt(s1) (symmetric)."""
  r = _psd_sqrt(s1)
  return np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)))


def _independent_fd(mu1, s1, mu2, s2):
  return (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
          - 2 * _independent_trace_sqrt(s1, s2))


# ------------------------------------------------------------------ Fréchet distance


def test_frechet_distance_matches_independent_eigenvalue_computation():
  rng = np.random.RandomState(0)
  for d in (1, 5, 32):
    mu1, mu2 = rng.randn(d), rng.randn(d)
    s1, s2 = _random_covariance(rng, d), _random_covariance(rng, d)
    np.testing.assert_allclose(metrics.frechet_distance(mu1, s1, mu2, s2),
                               _independent_fd(mu1, s1, mu2, s2), rtol=1e-7, atol=1e-8)


def test_frechet_distance_is_zero_for_identical_statistics():
  rng = np.random.RandomState(1)
  mu, s = rng.randn(16), _random_covariance(rng, 16)
  assert abs(metrics.frechet_distance(mu, s, mu, s)) < 1e-8 * np.trace(s)


def test_frechet_distance_is_symmetric():
  rng = np.random.RandomState(2)
  mu1, mu2 = rng.randn(10), rng.randn(10)
  s1, s2 = _random_covariance(rng, 10), _random_covariance(rng, 10)
  np.testing.assert_allclose(metrics.frechet_distance(mu1, s1, mu2, s2),
                             metrics.frechet_distance(mu2, s2, mu1, s1), rtol=1e-9)


def test_frechet_distance_with_equal_covariances_is_squared_mean_distance():
  mu1, mu2 = np.array([0.0, 0.0, 0.0]), np.array([1.0, 2.0, 2.0])
  s = np.diag([1.0, 2.0, 3.0])
  np.testing.assert_allclose(metrics.frechet_distance(mu1, s, mu2, s), 9.0, rtol=1e-10)


def test_rank_deficient_covariances_from_few_samples_give_the_exact_value():
  rng = np.random.RandomState(3)
  mu1, s1 = metrics.feature_statistics(rng.randn(5, 20))  # rank 4 in 20 dims
  mu2, s2 = metrics.feature_statistics(rng.randn(6, 20) + 0.3)
  np.testing.assert_allclose(metrics.frechet_distance(mu1, s1, mu2, s2),
                             _independent_fd(mu1, s1, mu2, s2), rtol=1e-6)


def test_singular_product_without_a_square_root_uses_the_eps_offset():
  # Two PSD matrices whose product has no finite scipy sqrtm (the result is all NaN).
  s1 = np.array([[1., 0, 1, 0], [0, 1, -1, 1], [1, -1, 2, -1], [0, 1, -1, 1]])
  s2 = np.array([[2., 0, 0, 2], [0, 0, 0, 0], [0, 0, 3, 1], [2, 0, 1, 3]])
  mu, eps = np.zeros(4), 1e-6
  offset = eps * np.eye(4)
  # The reference offsets only the matrix square root, not the trace terms.
  expected = np.trace(s1) + np.trace(s2) - 2 * _independent_trace_sqrt(s1 + offset,
                                                                        s2 + offset)
  got = metrics.frechet_distance(mu, s1, mu, s2, eps=eps)
  assert np.isfinite(got)
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_non_psd_covariance_with_imaginary_square_root_raises():
  mu = np.zeros(3)
  with pytest.raises(ValueError, match='Imaginary component'):
    metrics.frechet_distance(mu, np.eye(3), mu, -np.eye(3))


def test_feature_statistics_are_mean_and_unbiased_covariance():
  x = np.random.RandomState(4).randn(50, 6)
  mu, sigma = metrics.feature_statistics(x)
  np.testing.assert_allclose(mu, x.mean(0))
  np.testing.assert_allclose(sigma, np.cov(x.T))
  np.testing.assert_allclose(metrics.fid_from_features(x, x), 0.0, atol=1e-9)


# ------------------------------------------------------------------ digits_fd


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
  """One classifier per test session, trained into a temporary cache directory."""
  d = str(tmp_path_factory.mktemp('digits_cache'))
  digits_classifier.load_digits_classifier(IMAGE_SIZE, 1, d)
  return d


def test_digits_classifier_reaches_95_percent_on_the_held_out_split(cache_dir):
  assert digits_classifier.digits_classifier_accuracy(IMAGE_SIZE, 1, 'test', cache_dir) >= 0.95


def test_digits_classifier_is_cached_and_reused(cache_dir, monkeypatch):
  path = digits_classifier.digits_classifier_path(IMAGE_SIZE, 1, cache_dir)
  assert os.path.isfile(path)
  assert digits_classifier.DIGITS_CLASSIFIER_VERSION in os.path.basename(path)

  def no_training(*args):
    raise AssertionError('the cached classifier should have been loaded')

  monkeypatch.setattr(digits_classifier, '_train_digits_classifier', no_training)
  _, params = digits_classifier.load_digits_classifier(IMAGE_SIZE, 1, cache_dir)
  assert params['features']['kernel'].shape[-1] == digits_classifier.DIGITS_FEATURES


def test_digits_fd_of_the_training_split_itself_is_zero(cache_dir):
  train, _ = digits_classifier.digits_images('train', IMAGE_SIZE)
  assert abs(metrics.digits_fd(train, IMAGE_SIZE, cache_dir)) < 1e-6


def test_digits_floor_is_small_and_uniform_noise_is_far(cache_dir):
  noise = np.random.RandomState(0).uniform(
      -1, 1, (300, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)
  test, _ = digits_classifier.digits_images('test', IMAGE_SIZE)
  table = metrics.digits_fd_table(noise, test, IMAGE_SIZE, cache_dir)
  assert set(table) == {'floor', 'gen', 'hat'}
  # floor: held-out test digits vs the training split; here 'hat' is the same set.
  np.testing.assert_allclose(table['hat'], table['floor'], rtol=1e-6)
  np.testing.assert_allclose(table['floor'],
                             metrics.digits_fd(test, IMAGE_SIZE, cache_dir), rtol=1e-6)
  assert 0 < table['floor'] < 0.05 * table['gen']


def test_digits_fd_rejects_images_of_another_size(cache_dir):
  with pytest.raises(ValueError, match='expected images'):
    metrics.digits_fd(np.zeros((10, 8, 8, 1), np.float32), IMAGE_SIZE, cache_dir)


# ------------------------------------------------------------------ MMD


def _direct_unbiased_mmd(x, y, bandwidths):
  def k(a, b):
    d2 = np.sum((a[:, None] - b[None]) ** 2, -1)
    return sum(np.exp(-d2 / (2 * h * h)) for h in bandwidths)
  n, m = len(x), len(y)
  kxx, kyy = k(x, x), k(y, y)
  return ((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
          + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(x, y).mean())


def test_mmd_is_the_unbiased_multi_bandwidth_estimate_in_any_block_size():
  rng = np.random.RandomState(5)
  x, y = rng.randn(40, 2), rng.randn(30, 2) + 0.5
  bw = (0.2, 1.0, 3.0)
  np.testing.assert_allclose(metrics.mmd(x, y, bw, block=7),
                             _direct_unbiased_mmd(x, y, bw), rtol=1e-9)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift():
  rng = np.random.RandomState(6)
  x, y = rng.randn(2000, 2), rng.randn(2000, 2)
  same = metrics.mmd(x, y)
  shifted = metrics.mmd(x, y + np.array([0.5, 0.0]))
  far = metrics.mmd(x, y + np.array([2.0, 0.0]))
  assert abs(same) < 5e-3
  assert shifted > 20 * abs(same) and far > shifted


# ------------------------------------------------------------------ OOD AUROC


def _sklearn_auroc(e_in, e_out):
  labels = np.r_[np.zeros(len(e_in)), np.ones(len(e_out))]  # OOD is the positive class
  return sklearn.metrics.roc_auc_score(labels, np.r_[e_in, e_out])


def test_ood_auroc_equals_sklearn_roc_auc_with_ood_positive():
  rng = np.random.RandomState(7)
  e_in, e_out = rng.randn(500), rng.randn(300) + 0.7
  np.testing.assert_allclose(metrics.ood_auroc(e_in, e_out),
                             _sklearn_auroc(e_in, e_out), rtol=1e-12)


def _rank_auroc(e_in, e_out):
  """The Mann-Whitney form (average ranks) ood_auroc had before it called sklearn."""
  import scipy.stats  # pylint: disable=g-import-not-at-top
  e_in, e_out = np.asarray(e_in, np.float64), np.asarray(e_out, np.float64)
  ranks = scipy.stats.rankdata(np.concatenate([e_in, e_out]))
  n_out = e_out.size
  return (ranks[e_in.size:].sum() - n_out * (n_out + 1) / 2.0) / (e_in.size * n_out)


def test_ood_auroc_counts_ties_half():
  rng = np.random.RandomState(8)
  e_in, e_out = rng.randint(0, 5, 200), rng.randint(1, 6, 150)  # many ties
  np.testing.assert_allclose(metrics.ood_auroc(e_in, e_out),
                             _sklearn_auroc(e_in, e_out), rtol=1e-12)
  for seed in range(5):
    rng = np.random.RandomState(seed)
    e_in, e_out = rng.randint(0, 4, 97), rng.randint(0, 6, 61)
    np.testing.assert_allclose(metrics.ood_auroc(e_in, e_out), _rank_auroc(e_in, e_out),
                               rtol=1e-12)
  assert metrics.ood_auroc([1.0, 1.0], [1.0]) == 0.5


def test_ood_auroc_is_one_when_ood_energies_are_all_higher_and_zero_when_lower():
  assert metrics.ood_auroc([0.0, 1.0], [2.0, 3.0]) == 1.0
  assert metrics.ood_auroc([2.0, 3.0], [0.0, 1.0]) == 0.0


# ------------------------------------------------------------------ quality by name


def test_quality_metric_is_mmd_for_toys_digits_fd_for_digits_and_fid_otherwise():
  assert metrics.quality_metric('pinwheel') == 'mmd'
  assert metrics.quality_metric('digits') == 'digits_fd'
  assert metrics.quality_metric('digits', fid_weights='fid.npz') == 'fid'
  assert metrics.quality_metric('cifar10') == 'fid'
  assert set(metrics.QUALITY_METRICS) == {'fid', 'digits_fd', 'mmd'}
  with pytest.raises(ValueError, match="'is'.*fid, digits_fd, mmd"):
    metrics.quality('is', None, {})


def test_quality_scores_are_the_metrics_of_gen_and_hat_and_the_floor(cache_dir,
                                                                    monkeypatch):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from hat_ebm_jax.datasets import toy2d  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(0)
  c = ml_collections.ConfigDict(dict(dataset='eight_gaussians', seed=4,
                                     image_size=IMAGE_SIZE))
  gen, hat, true, floor = (rng.randn(50, 2) for _ in range(4))
  # mmd, against given points, with a floor
  got = metrics.quality('mmd', c, dict(gen=gen, hat=hat), true=true, floor=floor)
  assert list(got) == ['floor', 'gen', 'hat']
  assert got == dict(floor=metrics.mmd(floor, true), gen=metrics.mmd(gen, true),
                     hat=metrics.mmd(hat, true))
  # mmd at the end of training: fresh true points, default_rng(seed + 3), no floor
  from hat_ebm_jax import train  # pylint: disable=g-import-not-at-top
  fresh = toy2d.sample('eight_gaussians', 50, np.random.default_rng(7))
  assert train.final_metrics(c, dict(gen=gen, hat=hat)) == dict(
      mmd_gen=metrics.mmd(gen, fresh), mmd_hat=metrics.mmd(hat, fresh))
  # fid on features against reference statistics, no floor
  ref = metrics.feature_statistics(true)
  assert metrics.quality('fid', c, dict(gen=gen, hat=hat), reference=ref) == dict(
      gen=metrics.fid_from_features(gen, true), hat=metrics.fid_from_features(hat, true))
  # digits_fd: floor, gen, hat of digits_fd_table
  monkeypatch.setenv('HAT_EBM_CACHE', cache_dir)
  test, _ = digits_classifier.digits_images('test', IMAGE_SIZE)
  got = metrics.quality('digits_fd', c, dict(gen=test[:100], hat=test[100:]))
  assert got == metrics.digits_fd_table(test[:100], test[100:], IMAGE_SIZE, cache_dir)
  assert list(got) == ['floor', 'gen', 'hat']
