"""FID (SPEC §7): the FID Inception network and statistics over batches of images.

  module, variables = inception.load_fid_inception('fid_inception.npz')
  apply_fn = make_apply_fn(module, variables)
  stats_real = compute_statistics(apply_fn, real_batches)
  stats_fake = compute_statistics(apply_fn, sample_batches)
  fid = fid_score(stats_real, stats_fake)

Images are `[B, H, W, 3]` in `[-1, 1]`; batches of any size and resolution.
"""

from typing import Callable, Iterable, Tuple

import jax
import numpy as np

from hat_ebm_jax import metrics
from hat_ebm_jax.fid import inception
from hat_ebm_jax.fid.inception import FIDInception, load_fid_inception, WEIGHTS_URL

Stats = Tuple[np.ndarray, np.ndarray]


def make_apply_fn(module, variables) -> Callable[[jax.Array], jax.Array]:
  """A jitted `images [B, H, W, 3] -> features [B, D]` closing over the variables."""
  return jax.jit(lambda images: module.apply(variables, images))


def compute_features(apply_fn: Callable, images_iter: Iterable[np.ndarray]) -> np.ndarray:
  """Concatenated features of all batches, `[N, D]` float64.

  `apply_fn` is jitted here (jitting twice is harmless). A batch smaller than the first
  (the usual last batch) is padded to the first batch's size and the padding dropped, so
  there is one compilation per image resolution.
  """
  fn = jax.jit(apply_fn)
  feats, batch_size = [], None
  for images in images_iter:
    images = np.asarray(images, np.float32)
    n = images.shape[0]
    if n == 0:
      continue
    batch_size = batch_size or n
    if n < batch_size:
      pad = np.zeros((batch_size - n,) + images.shape[1:], np.float32)
      images = np.concatenate([images, pad])
    out = np.asarray(fn(images), np.float64)
    feats.append(out[:n])
  if not feats:
    raise ValueError('compute_statistics got no images.')
  return np.concatenate(feats)


def compute_statistics(apply_fn: Callable, images_iter: Iterable[np.ndarray]) -> Stats:
  """`(mu [D], sigma [D, D])` of the features of all images of `images_iter`."""
  return metrics.feature_statistics(compute_features(apply_fn, images_iter))


def fid_score(stats1: Stats, stats2: Stats) -> float:
  """Fréchet distance between two `(mu, sigma)` statistics."""
  return metrics.frechet_distance(stats1[0], stats1[1], stats2[0], stats2[1])


__all__ = ['FIDInception', 'load_fid_inception', 'WEIGHTS_URL', 'inception',
           'make_apply_fn', 'compute_features', 'compute_statistics', 'fid_score']
