"""scikit-learn's digits as a tensorflow-datasets builder, so the offline default dataset
goes through the same tfds interface (`data_dir`, splits, `prepare_data`) as cifar10.

`HatEbmDigits` generates from the copy of the digits shipped inside scikit-learn (no
network) with exactly the split of `digits.load`. Every example carries its position
`index` in `digits.load(split)`, so the split's order can be restored after tfds' write
shuffle. Images are stored losslessly (PNG) as uint8 `[8, 8, 1]`.

The builder is not registered with tfds (`skip_registration=True`): build it with
`builder(data_dir)`, never by name.
"""

import fcntl
import os
from typing import Optional, Tuple

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from hat_ebm_jax.datasets import digits

NAME = 'hat_ebm_digits'


class HatEbmDigits(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """scikit-learn digits, train 1,497 / test 300, uint8 `[8, 8, 1]` images."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'The split of hat_ebm_jax.datasets.digits.load.'}

  # tfds 4.9 locates a builder's code through `importlib_resources`, a package it does
  # not declare; the digits need no checksums file, so name the code path directly.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(8, 8, 1), encoding_format='png'),
            'label': tfds.features.ClassLabel(num_classes=10),
            'index': tfds.features.Scalar(np.int64),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://scikit-learn.org/stable/datasets/toy_dataset.html',
        description='scikit-learn digits (UCI optical recognition of handwritten '
                    'digits, 8x8), split of hat_ebm_jax.datasets.digits.',
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with scikit-learn: nothing to download
    return {split: self._generate_examples(split) for split in digits.SPLITS}

  def _generate_examples(self, split):
    images, labels = digits.load(split)
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image, 'label': int(label), 'index': i}


def builder(data_dir: Optional[str] = None) -> HatEbmDigits:
  """The digits builder rooted at `data_dir` (None or '': the tfds default dir)."""
  return HatEbmDigits(data_dir=data_dir or None)


def prepare(data_dir: Optional[str] = None) -> HatEbmDigits:
  """The builder, prepared (offline, a few seconds) if it is not yet.

  Processes that start at once on a fresh `data_dir` (a seed sweep, the paper_digits
  suite's `--jobs`) prepare it one at a time: the first holds a lock file beside the
  dataset's folder and builds, the others wait and then find it prepared (without the
  lock, tfds' final rename fails in all but one of them).
  """
  b = builder(data_dir)
  if b.is_prepared():
    return b
  root = os.path.dirname(os.fspath(b.data_dir))  # DATA_DIR/hat_ebm_digits
  os.makedirs(os.path.dirname(root), exist_ok=True)
  with open(root + '.prepare.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    b = builder(data_dir)
    if not b.is_prepared():
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(
          compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return b


def load_split(b: HatEbmDigits, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """Images uint8 `[N, 8, 8, 1]` and labels int64 `[N]` of a prepared split, in the
  order of `digits.load(split)`."""
  data = tfds.as_numpy(b.as_dataset(split=split, batch_size=-1, shuffle_files=False))
  order = np.argsort(data['index'], kind='stable')
  return data['image'][order], data['label'][order].astype(np.int64)
