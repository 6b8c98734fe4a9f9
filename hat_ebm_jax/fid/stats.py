"""FID statistics (docs/algorithm.md §9): Inception features over batches.

Their `(mu, sigma)`, and a dataset split's reference statistics, cached in a file tied to the FID weights.

    features = feature_fn('fid_inception.npz', mesh)        # or make_apply_fn(module, v)
    stats = compute_statistics(features, batches)           # (mu [D], sigma [D, D])
    ref, info = reference_statistics(config, workdir, features, mesh, fingerprint, True)
    fid = fid_score(stats, ref)

Batches are `[B, H, W, 1 or 3]` in `[-1, 1]`, host numpy or global `jax.Array`s split
over `data` (features come back to every host). The reference set is `num_eval_samples`
images of `config.split` through the input pipeline (stream seed `REFERENCE_SEED`), cached
as `WORKDIR/eval/fid_stats_<dataset>_<split>_<size>_<n>.npz` with the sha256 fingerprint of
the FID weights' file; a cache made with other weights is recomputed. `config.fid_stats`
names a file that is used as it is.
"""

import hashlib
from typing import Callable, Dict, Iterable, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from hat_ebm_jax import metrics, sharding

Stats = Tuple[np.ndarray, np.ndarray]
REFERENCE_SEED = 0  # the reference images do not depend on eval_seed


# ------------------------------------------------------------------ features


def make_apply_fn(module, variables) -> Callable[[jax.Array], jax.Array]:
  """A jitted `images [B, H, W, 3] -> features [B, D]` closing over the variables."""
  return jax.jit(lambda images: module.apply(variables, images))


def _to_rgb(x):
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def feature_fn(weights_path: str, mesh) -> Callable[[jax.Array], jax.Array]:
  """`images [B, S, S, 1 or 3] in [-1, 1] -> pool_3 features [B, 2048]` (sharded batch).
  Raises FileNotFoundError (where to get the weights, how to convert them) if missing."""
  from hat_ebm_jax.fid import inception  # pylint: disable=g-import-not-at-top
  module, variables = inception.load_fid_inception(weights_path)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  fn = sharding.jit(lambda v, x: module.apply(v, _to_rgb(x)), mesh,
                    in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                    out_shardings=sharding.batch_sharded(mesh))
  return lambda x: fn(variables, x)


def batch_features(apply_fn: Callable, images) -> np.ndarray:
  """`apply_fn(images)` on every host as float64 `[B, D]` (collective for a global
  array that spans processes)."""
  return np.asarray(sharding.to_host(apply_fn(images)), np.float64)


def compute_features(apply_fn: Callable, images_iter: Iterable) -> np.ndarray:
  """Concatenated features of all batches, `[N, D]` float64.

  `apply_fn` should be jitted (`make_apply_fn`, `feature_fn`). A host batch smaller than
  the first (the usual last batch) is padded to the first batch's size and the padding
  dropped, so there is one compilation per image resolution.
  """
  feats, batch_size = [], None
  for images in images_iter:
    if not isinstance(images, jax.Array):
      images = np.asarray(images, np.float32)
    n = images.shape[0]
    if n == 0:
      continue
    batch_size = batch_size or n
    if n < batch_size:
      pad = np.zeros((batch_size - n,) + images.shape[1:], np.float32)
      images = np.concatenate([images, pad])
    feats.append(batch_features(apply_fn, images)[:n])
  if not feats:
    raise ValueError('compute_statistics got no images.')
  return np.concatenate(feats)


def compute_statistics(apply_fn: Callable, images_iter: Iterable) -> Stats:
  """`(mu [D], sigma [D, D])` of the features of all images of `images_iter`."""
  return metrics.feature_statistics(compute_features(apply_fn, images_iter))


def fid_score(stats1: Stats, stats2: Stats) -> float:
  """Fréchet distance between two `(mu, sigma)` statistics."""
  return metrics.frechet_distance(stats1[0], stats1[1], stats2[0], stats2[1])


# ------------------------------------------------------------------ reference statistics


def weights_fingerprint(path: str) -> str:
  """First 16 hex digits of the file's sha256 (ties cached statistics to FID weights)."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      h.update(chunk)
  return h.hexdigest()[:16]


def reference_path(config, workdir: epath.Path) -> epath.Path:
  """`config.fid_stats`, else the cache file in `workdir/eval/`."""
  if config.fid_stats:
    return epath.Path(config.fid_stats)
  name = (f'fid_stats_{config.dataset}_{config.split}_{config.image_size}_'
          f'{config.num_eval_samples}.npz')
  return epath.Path(workdir) / 'eval' / name


def prepare(config, workdir: epath.Path, mesh) -> Tuple[Callable, str]:
  """Loads the FID Inception (`feature_fn`) and fingerprints its file; checks that the
  reference statistics are available (given, cached, or a prepared dataset). Raises
  FileNotFoundError naming the key and the fix (`DatasetNotFoundError` for the data)."""
  from hat_ebm_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  if not config.fid_weights:
    from hat_ebm_jax.fid import inception  # pylint: disable=g-import-not-at-top
    raise FileNotFoundError(
        f'FID on {config.dataset} needs the FID Inception weights: set '
        '--config.fid_weights=PATH.npz. This package never downloads them; get '
        f'pytorch-fid\'s converted TF graph {inception.WEIGHTS_URL} and convert it once '
        'with `python -m hat_ebm_jax.fid.convert_weights '
        '--pth=pt_inception-2015-12-05-6726825d.pth --out=fid_inception.npz`.')
  if config.fid_stats and not epath.Path(config.fid_stats).exists():
    raise FileNotFoundError(f'config.fid_stats={config.fid_stats!r} does not exist; give '
                            'an .npz with mu and sigma, or \'\' to compute the '
                            'reference statistics from config.split.')
  features = feature_fn(config.fid_weights, mesh)
  if not reference_path(config, workdir).exists():
    input_pipeline.check_available(config)
  return features, weights_fingerprint(config.fid_weights)


def compute_reference_statistics(config, apply_fn: Callable, mesh) -> Stats:
  """`(mu, sigma)` of the features of `num_eval_samples` images of `config.split`, read
  through the input pipeline (its training preprocessing, stream seed `REFERENCE_SEED`)
  in global batches of `eval_batch_size` split over `data`."""
  from hat_ebm_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  n, b = int(config.num_eval_samples), int(config.eval_batch_size)
  it = input_pipeline.create_iterator(
      config, split=config.split, batch_size=b, seed=REFERENCE_SEED,
      process_index=jax.process_index(), process_count=jax.process_count())
  return compute_statistics(
      apply_fn, (sharding.host_to_global(next(it), mesh) for _ in range(n // b)))


def reference_statistics(config, workdir: epath.Path, apply_fn: Callable, mesh,
                         fingerprint: str, is_chief: bool) -> Tuple[Stats, Dict]:
  """Reference statistics from `config.fid_stats` (an .npz with `mu`, `sigma`), the
  workdir cache (if made with the FID weights of `fingerprint`), or computed (and, on
  the chief, cached).

  Returns `((mu [D], sigma [D, D]), info)`; `info` describes the reference set (dataset,
  split, size, image size, stream seed, file, whether it was read from a file).
  """
  path = reference_path(config, workdir)
  info = dict(dataset=config.dataset, split=config.split, size=int(config.num_eval_samples),
              image_size=int(config.image_size), seed=REFERENCE_SEED)
  if path.exists():
    with path.open('rb') as f, np.load(f) as z:
      stored = str(z['fid_weights_sha'][()]) if 'fid_weights_sha' in z.files else ''
      if config.fid_stats or stored == fingerprint:
        if config.fid_stats:  # describe the given file by what it says, if anything
          info = {k: z[k][()].item() for k in info if k in z.files}
        info.update(file=str(path), cached=True)
        return (np.asarray(z['mu'], np.float64), np.asarray(z['sigma'], np.float64)), info
    logging.warning('%s was made with other FID weights; recomputing it.', path)
  mu, sigma = compute_reference_statistics(config, apply_fn, mesh)
  if is_chief:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('wb') as f:
      np.savez(f, mu=mu, sigma=sigma, fid_weights_sha=np.asarray(fingerprint),
               **{k: np.asarray(v) for k, v in info.items()})
  info.update(file=str(path), cached=False)
  return (mu, sigma), info
