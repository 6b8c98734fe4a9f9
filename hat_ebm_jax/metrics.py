"""Evaluation metrics: Fréchet distance, the offline `digits_fd`, MMD and OOD AUROC.

* `frechet_distance(mu1, sigma1, mu2, sigma2)`: the FID formula of the TF / pytorch-fid
  reference code. `feature_statistics(features) -> (mu, sigma)`.
* `digits_fd(images, image_size)`: the Fréchet distance between features of a small CNN
  classifier of the digits (`digits_classifier`: trained once, deterministically, and
  cached) for `images` and for the digits' *training* split. `digits_fd_table` reports
  the floor (held-out *test* digits vs the training split) next to the generator's and
  the Hat EBM's samples, all against the same training-split statistics. It is the
  offline stand-in for FID; its values are not comparable to FID.
* `mmd(x, y)`: unbiased squared MMD with a sum of Gaussian kernels (2D toy evaluation).
* `ood_auroc(energy_in, energy_out)`: P(energy of an OOD sample > energy of an
  in-distribution sample), ties counting half.

Sample quality by name (`QUALITY_METRICS`, big_vision style), for evaluation and for
training's final metrics alike: `quality_metric(dataset, fid_weights)` picks 'fid',
'digits_fd' or 'mmd'; `quality(name, config, samples, **reference)` returns the scores
`{['floor',] 'gen', 'hat'}` of `G(z)` and `G(z) + y` (and the floor, where the metric has
one).
"""

import functools
import os
import warnings
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import scipy.linalg
import sklearn.metrics

from hat_ebm_jax import digits_classifier
from hat_ebm_jax.datasets import TOY_DATASETS

# ------------------------------------------------------------------ Fréchet distance


def feature_statistics(features: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """`features [N, D]` -> `(mu [D], sigma [D, D])`, sigma = `np.cov(rowvar=False)`."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'feature_statistics needs [N >= 2, D] features; got {features.shape}.')
  return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray:
  """`scipy.linalg.sqrtm(a, disp=False)[0]`, also on SciPy versions without `disp`."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # disp deprecation (SciPy 1.17), singular-matrix notes
    try:
      out = scipy.linalg.sqrtm(a, disp=False)
    except TypeError:  # SciPy >= 1.18 removed `disp`
      out = scipy.linalg.sqrtm(a)
  # (sqrtm, errest) with disp=False, except SciPy 1.17 returns the bare array for 1x1.
  return np.asarray(out[0] if isinstance(out, tuple) else out)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, eps: float = 1e-6) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), as the reference code.

  `|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 sigma2))`. When the matrix
  square root is not finite (singular product), `eps * I` is added to both sigmas. A
  complex square root is reduced to its real part, unless its diagonal has an imaginary
  part above 1e-3, which raises ValueError.
  """
  mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(
      np.asarray(mu2, np.float64))
  sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(
      np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape:
    raise ValueError(f'mean shapes differ: {mu1.shape} vs {mu2.shape}.')
  if sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
    raise ValueError(f'covariance shapes {sigma1.shape}, {sigma2.shape} do not fit means '
                     f'{mu1.shape}.')
  diff = mu1 - mu2
  covmean = _sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = _sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f'Imaginary component {np.max(np.abs(covmean.imag))} in the matrix '
                       'square root of sigma1 sigma2.')
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2)
               - 2.0 * np.trace(covmean))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
  """Fréchet distance between the Gaussian fits of two feature sets `[N, D]`, `[M, D]`."""
  return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


# ------------------------------------------------------------------ digits_fd

def digits_reference_statistics(image_size: int, nch: int = 1,
                                cache_dir: Optional[str] = None):
  """`(mu, sigma)` of the classifier features of the digits' training split: computed
  once per classifier file (the final metrics score up to eight sets against it)."""
  digits_classifier.load_digits_classifier(image_size, nch, cache_dir)  # trains if needed
  path = digits_classifier.digits_classifier_path(image_size, nch, cache_dir)
  return _reference_statistics(path, os.path.getmtime(path), image_size, nch, cache_dir)


@functools.lru_cache(maxsize=8)
def _reference_statistics(path: str, mtime: float, image_size: int, nch: int,
                          cache_dir: Optional[str]):
  del path, mtime  # the cache key: a retrained classifier gets new statistics
  x, _ = digits_classifier.digits_images('train', image_size, nch)
  return feature_statistics(digits_classifier.digits_features(x, image_size, cache_dir))


def digits_fd(images: np.ndarray, image_size: int, cache_dir: Optional[str] = None) -> float:
  """Fréchet distance between `images` `[N, S, S, nch]` in `[-1, 1]` and the digits'
  training split, in the features of the cached digits classifier. N >= 2; a few hundred
  images or more for a stable value."""
  images = digits_classifier.check_images(images, image_size)
  ref = digits_reference_statistics(image_size, images.shape[-1], cache_dir)
  return frechet_distance(*feature_statistics(digits_classifier.digits_features(images, image_size,
                                                              cache_dir)), *ref)


def digits_fd_table(gen_images: np.ndarray, hat_images: np.ndarray, image_size: int,
                    cache_dir: Optional[str] = None) -> Dict[str, float]:
  """Digits Fréchet distances, all against the training split's feature statistics:

  * `floor`: the held-out test split (300 real digits): the value of a perfect sampler
    with that many samples (finite-sample bias of the covariance estimate);
  * `gen`: the generator's samples `G(z)`;
  * `hat`: the Hat EBM's samples `G(z) + y`.
  Compare `gen` and `hat` with `floor` at the same sample count.
  """
  gen_images = digits_classifier.check_images(gen_images, image_size)
  hat_images = digits_classifier.check_images(hat_images, image_size)
  if hat_images.shape[-1] != gen_images.shape[-1]:
    raise ValueError(f'gen and hat images differ in channels: {gen_images.shape} vs '
                     f'{hat_images.shape}.')
  nch = gen_images.shape[-1]
  ref = digits_reference_statistics(image_size, nch, cache_dir)
  test_images, _ = digits_classifier.digits_images('test', image_size, nch)
  out = {}
  for name, images in (('floor', test_images), ('gen', gen_images), ('hat', hat_images)):
    feats = digits_classifier.digits_features(images, image_size, cache_dir)
    out[name] = frechet_distance(*feature_statistics(feats), *ref)
  return out


# ------------------------------------------------------------------ MMD


def mmd(x: np.ndarray, y: np.ndarray,
        bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
        block: int = 1024) -> float:
  """Unbiased squared MMD between samples `x [N, D]` and `y [M, D]` (N, M >= 2).

  Kernel: `k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2))` over `bandwidths`. Estimate:
  `mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)`;
  zero in expectation when both sets come from one distribution (so it can be slightly
  negative). Computed in float64 blocks of `block` rows: memory O(block * max(N, M)).
  """
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  y = np.asarray(y, np.float64).reshape(len(y), -1)
  if len(x) < 2 or len(y) < 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f'mmd needs [N >= 2, D] and [M >= 2, D]; got {x.shape}, {y.shape}.')
  scales = -0.5 / np.square(np.asarray(bandwidths, np.float64))

  def kernel_sum(a, b):
    total, b_sq = 0.0, np.sum(b * b, axis=1)
    for i in range(0, len(a), block):
      ab = a[i:i + block]
      d2 = np.maximum(np.sum(ab * ab, axis=1)[:, None] + b_sq[None, :] - 2.0 * ab @ b.T, 0)
      total += sum(np.exp(s * d2).sum() for s in scales)
    return total

  n, m, nk = len(x), len(y), len(scales)
  kxx = (kernel_sum(x, x) - n * nk) / (n * (n - 1))  # drop the diagonal, k(a, a) = nk
  kyy = (kernel_sum(y, y) - m * nk) / (m * (m - 1))
  kxy = kernel_sum(x, y) / (n * m)
  return float(kxx + kyy - 2.0 * kxy)


# ------------------------------------------------------------------ OOD AUROC


def ood_auroc(energy_in: np.ndarray, energy_out: np.ndarray) -> float:
  """AUROC of energy as an out-of-distribution score.

  In-distribution samples should have lower energy `H(x)`. Returns the probability that
  a random OOD sample has a higher energy than a random in-distribution sample, ties
  counting half (the Mann-Whitney U / (n_in n_out)). 1: perfect separation, 0.5: chance.
  Computed by `sklearn.metrics.roc_auc_score` with OOD as the positive class and the
  energy as the score.
  """
  e_in = np.asarray(energy_in, np.float64).ravel()
  e_out = np.asarray(energy_out, np.float64).ravel()
  if e_in.size == 0 or e_out.size == 0:
    raise ValueError('ood_auroc needs at least one in- and one out-of-distribution score.')
  if not (np.isfinite(e_in).all() and np.isfinite(e_out).all()):
    raise ValueError('ood_auroc got non-finite energies.')
  labels = np.concatenate([np.zeros(e_in.size), np.ones(e_out.size)])
  return float(sklearn.metrics.roc_auc_score(labels, np.concatenate([e_in, e_out])))


# ------------------------------------------------------------------ quality by name


def fid_quality(config, samples: Mapping[str, np.ndarray], *,
                reference: Tuple[np.ndarray, np.ndarray]) -> Dict[str, float]:
  """FID of `G(z)` and `G(z) + y`: `samples['gen']`, `samples['hat']` are their FID
  Inception features `[N, 2048]`, `reference` the `(mu, sigma)` of the reference set
  (`fid.reference_statistics`). No floor."""
  del config  # the features and the reference statistics say everything
  return {k: frechet_distance(*feature_statistics(samples[k]), *reference)
          for k in ('gen', 'hat')}


def digits_fd_quality(config, samples: Mapping[str, np.ndarray]) -> Dict[str, float]:
  """`digits_fd_table` of images `samples['gen']`, `samples['hat']` `[N, S, S, nch]` at
  `config.image_size`: floor (held-out test digits), gen, hat."""
  return digits_fd_table(samples['gen'], samples['hat'], config.image_size)


def mmd_quality(config, samples: Mapping[str, np.ndarray], *, true: np.ndarray,
                floor: Optional[np.ndarray] = None) -> Dict[str, float]:
  """Squared MMD of points `samples['gen']`, `samples['hat']` `[N, 2]` against `true`
  points of the density `[M, 2]` (evaluation: a split of the toy dataset; the end of
  training: fresh points, `train.final_metrics`); with `floor` (true points of another
  split) also `mmd(floor, true)` first, the value of a perfect sampler."""
  del config  # the points say everything
  out = {} if floor is None else {'floor': mmd(floor, true)}
  out.update(gen=mmd(samples['gen'], true), hat=mmd(samples['hat'], true))
  return out


# name -> fn(config, samples {'gen', 'hat'}, **reference) -> {['floor',] 'gen', 'hat'}
QUALITY_METRICS: Mapping[str, Callable[..., Dict[str, float]]] = {
    'fid': fid_quality, 'digits_fd': digits_fd_quality, 'mmd': mmd_quality}


def quality_metric(dataset: str, fid_weights: str = '') -> str:
  """The quality metric of `dataset`: 'mmd' for the 2D toys, 'digits_fd' for digits
  (FID when `fid_weights` are given), 'fid' for the tfds image datasets."""
  if dataset in TOY_DATASETS:
    return 'mmd'
  if dataset == 'digits':
    return 'fid' if fid_weights else 'digits_fd'
  return 'fid'


def quality(name: str, config, samples: Mapping[str, np.ndarray],
            **reference) -> Dict[str, float]:
  """The scores of `QUALITY_METRICS[name]` as floats, in the order floor, gen, hat."""
  if name not in QUALITY_METRICS:
    raise ValueError(f'Unknown quality metric {name!r}; known: '
                     f'{", ".join(QUALITY_METRICS)}.')
  return {k: float(v) for k, v in QUALITY_METRICS[name](config, samples,
                                                        **reference).items()}
