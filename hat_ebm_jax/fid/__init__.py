"""FID (docs/algorithm.md §9): the FID Inception network and statistics over batches of images.

  module, variables = inception.load_fid_inception('fid_inception.npz')
  apply_fn = make_apply_fn(module, variables)
  stats_real = compute_statistics(apply_fn, real_batches)
  stats_fake = compute_statistics(apply_fn, sample_batches)
  fid = fid_score(stats_real, stats_fake)

Images are `[B, H, W, 3]` in `[-1, 1]`; batches of any size and resolution. Evaluation
takes the same path (`fid/stats.py`): `feature_fn` (sharded over `data`),
`reference_statistics` (cached, tied to the weights' fingerprint).
"""

from hat_ebm_jax.fid import inception
from hat_ebm_jax.fid import stats
from hat_ebm_jax.fid.inception import FIDInception, load_fid_inception, WEIGHTS_URL
from hat_ebm_jax.fid.stats import (Stats, compute_features, compute_statistics, feature_fn,
                                   fid_score, make_apply_fn, reference_statistics,
                                   weights_fingerprint)

__all__ = ['FIDInception', 'load_fid_inception', 'WEIGHTS_URL', 'inception', 'stats',
           'Stats', 'make_apply_fn', 'feature_fn', 'compute_features',
           'compute_statistics', 'fid_score', 'reference_statistics',
           'weights_fingerprint']
