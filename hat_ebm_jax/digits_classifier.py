"""The small CNN classifier of the digits behind `digits_fd` (`metrics`): its net, its
deterministic training (seed 0, Adam, `_TRAIN_STEPS` steps, a few seconds) and the cache
file it is trained into once (`$HAT_EBM_CACHE` or `~/.cache/hat_ebm_jax`), and its
penultimate features.

* `load_digits_classifier(image_size, nch)` -> `(module, params)`, trained if not cached;
* `digits_features(images, image_size)`: features `[N, DIGITS_FEATURES]`;
* `digits_classifier_accuracy(image_size)`: accuracy on a digits split;
* `digits_images(split, image_size, nch)`: a digits split as model images.
"""

import functools
import os
import time
from typing import Callable, Dict, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hat_ebm_jax.datasets import digits

DIGITS_CLASSIFIER_VERSION = 'v1'  # bump when the net or its training changes
DIGITS_FEATURES = 64  # penultimate width = feature dimension of digits_fd
_TRAIN_STEPS = 250
_BATCH = 128
_LR = 2e-3


class DigitsClassifier(nn.Module):
  """Small CNN for the digits; `features` (penultimate, after ReLU) feed `digits_fd`.

  Inputs `[B, S, S, nch]` in `[-1, 1]`. Images larger than 16 first go through a
  patchifying conv (kernel = stride = S // 16) so training stays cheap at any size.
  Returns `(logits [B, 10], features [B, DIGITS_FEATURES])`.
  """
  num_features: int = DIGITS_FEATURES

  @nn.compact
  def __call__(self, x):
    p = x.shape[1] // 16
    if p > 1:
      x = nn.relu(nn.Conv(16, (p, p), strides=(p, p), padding='VALID', name='patch')(x))
    x = nn.relu(nn.Conv(16, (3, 3), name='conv1')(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = nn.relu(nn.Conv(32, (3, 3), name='conv2')(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape(x.shape[0], -1)
    features = nn.relu(nn.Dense(self.num_features, name='features')(x))
    return nn.Dense(10, name='logits')(features), features


def default_cache_dir() -> str:
  """`$HAT_EBM_CACHE` or `~/.cache/hat_ebm_jax`."""
  return os.environ.get('HAT_EBM_CACHE') or os.path.join(
      os.path.expanduser('~'), '.cache', 'hat_ebm_jax')


def digits_classifier_path(image_size: int, nch: int = 1,
                           cache_dir: Optional[str] = None) -> str:
  """The cache file of the classifier for `image_size` and `nch`."""
  return os.path.join(
      cache_dir or default_cache_dir(),
      f'digits_classifier_{DIGITS_CLASSIFIER_VERSION}_s{image_size}_c{nch}.npz')


def digits_images(split: str, image_size: int, nch: int = 1) -> Tuple[np.ndarray, np.ndarray]:
  """A digits split through `digits.to_model_images` (grey tiled to `nch` channels)."""
  images, labels = digits.load(split)
  x = digits.to_model_images(images, image_size)
  if nch != 1:
    x = np.repeat(x, nch, axis=-1)
  return x, labels


def _train_digits_classifier(image_size: int, nch: int) -> Dict:
  """Deterministic training (seed 0, Adam, `_TRAIN_STEPS` steps). Returns params."""
  x, y = digits_images('train', image_size, nch)
  module = DigitsClassifier()
  params = module.init(jax.random.PRNGKey(0), jnp.zeros((1,) + x.shape[1:]))['params']
  tx = optax.adam(_LR)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, xb, yb):
    def loss_fn(p):
      logits, _ = module.apply({'params': p}, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.RandomState(0)
  order, pos = rng.permutation(len(x)), 0
  for _ in range(_TRAIN_STEPS):
    if pos + _BATCH > len(x):
      order, pos = rng.permutation(len(x)), 0
    idx = order[pos:pos + _BATCH]
    pos += _BATCH
    params, opt_state = step(params, opt_state, x[idx], y[idx])
  return jax.device_get(params)


def load_digits_classifier(image_size: int, nch: int = 1,
                           cache_dir: Optional[str] = None) -> Tuple[DigitsClassifier, Dict]:
  """`(module, params)`: loaded from the cache file, or trained (a few seconds) and cached."""
  path = digits_classifier_path(image_size, nch, cache_dir)
  if os.path.isfile(path):
    try:
      with np.load(path) as f:
        flat = {tuple(k.split('/')): np.asarray(f[k]) for k in f.files}
      return DigitsClassifier(), flax.traverse_util.unflatten_dict(flat)
    except Exception:  # pylint: disable=broad-except  # corrupt cache: retrain
      pass
  params = _train_digits_classifier(image_size, nch)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f'{path}.{os.getpid()}.{time.time_ns()}.tmp.npz'
  np.savez(tmp, **{'/'.join(k): np.asarray(v)
                   for k, v in flax.traverse_util.flatten_dict(params).items()})
  os.replace(tmp, path)  # atomic: concurrent writers leave one whole file
  return DigitsClassifier(), params


def check_images(images: np.ndarray, image_size: int) -> np.ndarray:
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or images.shape[1:3] != (image_size, image_size):
    raise ValueError(f'expected images [N, {image_size}, {image_size}, nch]; got '
                     f'{images.shape}.')
  return images


@functools.lru_cache(maxsize=8)
def _jitted(path: str, mtime: Optional[float], image_size: int, nch: int,
            cache_dir: Optional[str]) -> Callable:
  """The classifier's jitted `images -> (logits, features)`, one per cache file (`path`
  at `mtime`): the final metrics score many sample sets (both weights, several chain
  lengths), each compiling nothing new."""
  del path, mtime  # the cache key
  module, params = load_digits_classifier(image_size, nch, cache_dir)
  return jax.jit(lambda xb: module.apply({'params': params}, xb))


def classifier_outputs(images: np.ndarray, image_size: int, cache_dir: Optional[str],
                        batch: int = 500) -> Tuple[np.ndarray, np.ndarray]:
  images = check_images(images, image_size)
  nch = images.shape[-1]
  load_digits_classifier(image_size, nch, cache_dir)  # trains and caches it if needed
  path = digits_classifier_path(image_size, nch, cache_dir)
  apply = _jitted(path, os.path.getmtime(path) if os.path.isfile(path) else None,
                  image_size, nch, cache_dir)
  logits, feats = [], []
  for i in range(0, len(images), batch):
    lo, fe = apply(images[i:i + batch])
    logits.append(np.asarray(lo))
    feats.append(np.asarray(fe, np.float64))
  return np.concatenate(logits), np.concatenate(feats)


def digits_features(images: np.ndarray, image_size: int,
                    cache_dir: Optional[str] = None) -> np.ndarray:
  """Penultimate classifier features `[N, DIGITS_FEATURES]` of images `[N, S, S, nch]`."""
  return classifier_outputs(images, image_size, cache_dir)[1]


def digits_classifier_accuracy(image_size: int, nch: int = 1, split: str = 'test',
                               cache_dir: Optional[str] = None) -> float:
  """Accuracy of the (cached) digits classifier on a digits split."""
  x, y = digits_images(split, image_size, nch)
  logits, _ = classifier_outputs(x, image_size, cache_dir)
  return float(np.mean(np.argmax(logits, axis=-1) == y))
