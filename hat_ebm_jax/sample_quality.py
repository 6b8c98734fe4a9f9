"""Scores of named sample sets beyond `G(z)` and `G(z) + y`, and a second digits judge.

`metrics.quality` scores the pair `gen`, `hat` with the dataset's metric. The final
metrics and the evaluation also score other sets (`hat_3x`, `hat_10x`: longer chains,
`long_run`; `gen_ema`, `hat_ema`: the EMA weights): `extra_scores` scores them with the
same metric, against the same reference.

On digits a second judge, independent of the digits classifier that `digits_fd` uses:
`digits_pca_fd`, the Fréchet distance between Gaussian fits of the images' projections on
the top `PCA_COMPONENTS` principal components of the training digits' pixels (no trained
network: a pixel-space judge). Where the two disagree, both are reported.
"""

import functools
from typing import Dict, Mapping, Tuple

import numpy as np

from hat_ebm_jax import digits_classifier, metrics

PCA_COMPONENTS = 32  # 16x16 digits: 32 components keep 95% of the pixel variance
PAIR = ('gen', 'hat')  # the sets `metrics.quality` scores


@functools.lru_cache(maxsize=4)
def _pca(image_size: int, nch: int) -> Tuple[np.ndarray, np.ndarray]:
  """`(mean [D], basis [D, PCA_COMPONENTS])` of the training digits' pixels."""
  x, _ = digits_classifier.digits_images('train', image_size, nch)
  x = x.reshape(len(x), -1).astype(np.float64)
  mean = x.mean(axis=0)
  _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
  return mean, vt[:PCA_COMPONENTS].T


def pca_features(images: np.ndarray, image_size: int) -> np.ndarray:
  """Projections `[N, PCA_COMPONENTS]` of images `[N, S, S, nch]` in `[-1, 1]`."""
  images = np.asarray(images, np.float64)
  mean, basis = _pca(image_size, images.shape[-1])
  return (images.reshape(len(images), -1) - mean) @ basis


@functools.lru_cache(maxsize=4)
def _reference_statistics(image_size: int, nch: int) -> Tuple[np.ndarray, np.ndarray]:
  """`(mu, sigma)` of the training digits' `pca_features`: once a size, not once a set."""
  ref, _ = digits_classifier.digits_images('train', image_size, nch)
  return metrics.feature_statistics(pca_features(ref, image_size))


def digits_pca_fd(images: np.ndarray, image_size: int) -> float:
  """Fréchet distance of `images` to the training digits in `pca_features`."""
  nch = np.asarray(images).shape[-1]
  return metrics.frechet_distance(
      *metrics.feature_statistics(pca_features(images, image_size)),
      *_reference_statistics(image_size, nch))


def digits_pca_fd_table(samples: Mapping[str, np.ndarray],
                        image_size: int) -> Dict[str, float]:
  """`digits_pca_fd` of every set in `samples` and of the held-out test digits
  (`floor`), all against the training split."""
  nch = np.asarray(next(iter(samples.values()))).shape[-1]
  test, _ = digits_classifier.digits_images('test', image_size, nch)
  sets = dict(floor=test, **samples)
  return {k: digits_pca_fd(v, image_size) for k, v in sets.items()}


def extra_scores(metric: str, config, samples: Mapping[str, np.ndarray],
                 **reference) -> Dict[str, float]:
  """`{f'{metric}_{name}': score}` for the sets of `samples` other than `gen` and `hat`
  (scored by `metrics.quality`), and on digits `{f'digits_pca_fd_{name}': score}` for
  every set and the floor. `reference`: what `metrics.quality` takes (`true` points for
  'mmd', the `reference` statistics `(mu, sigma)` for 'fid', whose `samples` are
  Inception features as `metrics.fid_quality` takes them)."""
  extra = {k: v for k, v in samples.items() if k not in PAIR}
  out: Dict[str, float] = {}
  if metric == 'digits_fd':
    out.update({f'digits_fd_{k}': metrics.digits_fd(v, config.image_size)
                for k, v in extra.items()})
    out.update({f'digits_pca_fd_{k}': v for k, v in
                digits_pca_fd_table(samples, config.image_size).items()})
  elif metric == 'mmd':
    out.update({f'mmd_{k}': metrics.mmd(v, reference['true']) for k, v in extra.items()})
  elif metric == 'fid' and extra:  # `samples` are Inception features, as fid_quality's
    out.update({f'fid_{k}': metrics.frechet_distance(*metrics.feature_statistics(v),
                                                     *reference['reference'])
                for k, v in extra.items()})
  return {k: float(v) for k, v in out.items()}
