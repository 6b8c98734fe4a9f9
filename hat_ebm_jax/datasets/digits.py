"""scikit-learn's handwritten digits (1,797 8x8 grey images, shipped inside the package):
the offline default dataset.

Splits are fixed: a permutation with seed 0, the first 1,497 images `train`, the last 300
`test`. `to_model_images` is the one preprocessing every consumer uses (the input
pipeline, `metrics.digits_fd`): uint8 -> antialiased bilinear resize -> `[-1, 1]`.
"""

from typing import Tuple

import numpy as np

NUM_TRAIN = 1497
NUM_TEST = 300
SPLITS = {'train': (0, NUM_TRAIN), 'test': (NUM_TRAIN, NUM_TRAIN + NUM_TEST)}


def load(split: str = 'train') -> Tuple[np.ndarray, np.ndarray]:
  """Images `uint8 [N, 8, 8, 1]` (0..255) and labels `int64 [N]` of a split."""
  if split not in SPLITS:
    raise ValueError(f'digits has splits {sorted(SPLITS)}; got {split!r}.')
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  d = load_digits()
  images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[..., None]
  perm = np.random.RandomState(0).permutation(len(images))
  lo, hi = SPLITS[split]
  idx = perm[lo:hi]
  return images[idx], d.target[idx].astype(np.int64)


def to_model_images(images: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 `[N, h, w, 1]` -> float32 `[N, S, S, 1]` in `[-1, 1]` (antialiased resize)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = tf.convert_to_tensor(images)
  if images.shape[1] != image_size or images.shape[2] != image_size:
    x = tf.image.resize(tf.cast(x, tf.float32), (image_size, image_size),
                        method='bilinear', antialias=True)
  x = tf.cast(x, tf.float32)
  return np.asarray(tf.clip_by_value(2.0 * x / 255.0 - 1.0, -1.0, 1.0), np.float32)
