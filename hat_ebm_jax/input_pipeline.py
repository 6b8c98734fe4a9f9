"""Training batches and evaluation arrays for every dataset of docs/algorithm.md §7, host-local.

    create_iterator(config, ...) -> iterator of float32 numpy batches
        images: [batch_size // process_count, S, S, nch] in [-1, 1]
        2D toys: [batch_size // process_count, 2]
    load_array(config, split, max_examples=None) -> float32 [N, S, S, nch] (or [N, 2])
    num_examples(config, split) -> int

Three sources, one interface:

* tfds image datasets (`cifar10`, `celeb_a`, `imagenet2012`): tf.data over the prepared
  tfds records. Each process reads only its share `tfds.even_splits(split,
  process_count)[process_index]`. Epoch `e` of a share is its records in stored order
  (tfds shuffles at write time) through a shuffle buffer of `config.shuffle_buffer`
  seeded by `(seed, e, process_index)`; epochs are concatenated (repeat) and batched with
  `drop_remainder`. Example number `i` of a process's stream is cropped with the
  stateless seed `(seed, i * process_count + process_index)`. Resuming at `start_step`
  rebuilds the stream from epoch `start_step * B_local // n_local` and skips the
  remaining `start_step * B_local % n_local` records *before* decoding, so it yields
  exactly the batches a run from step 0 would have seen from `start_step` on. Cost:
  reading (not decoding) at most one epoch of the process's share plus one shuffle
  buffer, e.g. up to 1.28M / process_count ImageNet records, ~140 GB / process_count of
  I/O, in the worst case. The stream depends on `process_count` (the shares change).
* `digits` (offline default): the tfds builder of `datasets/digits_tfds.py`, prepared on
  first use into `config.data_dir` (no network), loaded whole and preprocessed once with
  `digits.to_model_images`. Batches are index-based: position `p` of the global example
  stream is element `p % N` of the permutation `default_rng([seed, p // N])` of the
  split, global batch `k` is positions `[k * B, (k + 1) * B)`, and process `i` takes
  rows `[i * B_local, (i + 1) * B_local)` of it. Resuming costs nothing, and the global
  batches do not depend on `process_count`.
* 2D toys: global batch `k` is `toy2d.sample(name, B, default_rng([seed, k]))`, process
  `i` takes its rows as for digits.

The pipeline never downloads: a tfds dataset that is not prepared in `config.data_dir`
raises `DatasetNotFoundError` saying how to prepare it (`python -m
hat_ebm_jax.prepare_data`). A global tf random seed (`tf.random.set_seed`) changes the
shuffle order of the tfds datasets but not its determinism.
"""

import os
from typing import Dict, Iterator, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from hat_ebm_jax.datasets import digits
from hat_ebm_jax.datasets import digits_tfds
from hat_ebm_jax.datasets import toy2d
from hat_ebm_jax.datasets import IMAGE_DATASETS, TFDS_DATASETS, TOY_DATASETS  # pylint: disable=unused-import
TOY_SPLIT_SIZE = 10000  # points in a toy dataset's fixed evaluation "split"

# Files tfds needs in --manual_dir, and where to get them.
MANUAL_FILES = {
    'celeb_a': ('img_align_celeba.zip', 'list_eval_partition.txt',
                'list_attr_celeba.txt', 'list_landmarks_align_celeba.txt',
                'identity_CelebA.txt'),
    'imagenet2012': ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'),
}
MANUAL_SOURCES = {
    'celeb_a': ('https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Google Drive: '
                'Img/img_align_celeba.zip, Eval/list_eval_partition.txt, '
                'Anno/list_attr_celeba.txt, Anno/list_landmarks_align_celeba.txt, '
                'Anno/identity_CelebA.txt)'),
    'imagenet2012': ('https://image-net.org/download-images (an account is needed; '
                     'ILSVRC2012 "Training images (Task 1 & 2)" and "Validation images '
                     '(all tasks)")'),
}


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not prepared where the config points (the message says how to)."""


def prepare_instructions(name: str, data_dir: str = '') -> str:
  """How to prepare dataset `name` into `data_dir` ('' = the tfds default), as text."""
  dd = f' --data_dir={data_dir}' if data_dir else ''
  if name in MANUAL_FILES:
    files = ', '.join(MANUAL_FILES[name])
    return (f'{name} needs files downloaded by hand:\n'
            f'  1. download {files}\n'
            f'     from {MANUAL_SOURCES[name]}\n'
            f'     into one folder MANUAL_DIR (do not extract them);\n'
            f'  2. python -m hat_ebm_jax.prepare_data --dataset={name} '
            f'--manual_dir=MANUAL_DIR{dd}')
  return f'python -m hat_ebm_jax.prepare_data --dataset={name}{dd}'


def _default_data_dir() -> str:
  return os.fspath(tfds.core.constants.DATA_DIR)


def tfds_builder(name: str, data_dir: str = '') -> tfds.core.DatasetBuilder:
  """The prepared tfds builder of `name` in `data_dir` ('' = tfds default).

  `digits` is prepared on the spot (offline); any other dataset that is not prepared
  raises `DatasetNotFoundError` without trying to download.
  """
  if name == 'digits':
    return digits_tfds.prepare(data_dir or None)
  if name not in TFDS_DATASETS:
    raise ValueError(f'{name!r} is not a tfds image dataset of this project; known: '
                     f'{", ".join(IMAGE_DATASETS)}.')
  builder = tfds.builder(name, data_dir=data_dir or None)
  if not builder.is_prepared():
    where = (repr(data_dir) if data_dir else
             f'{_default_data_dir()!r} (the tfds default, as config.data_dir is empty)')
    raise DatasetNotFoundError(
        f'Dataset {name!r} is not prepared in data_dir {where}: found no '
        f'{builder.data_dir}. The input pipeline never downloads; prepare it once:\n'
        f'{prepare_instructions(name, data_dir)}\n'
        f'then train with --config.data_dir set to that data_dir.')
  return builder


# ----------------------------------------------------------------------- preprocessing


def _resize(x: tf.Tensor, height, width) -> tf.Tensor:
  return tf.image.resize(x, tf.stack([height, width]), method='bilinear', antialias=True)


def preprocess_image(image: Union[np.ndarray, tf.Tensor], image_size: int,
                     random_crop: bool = False, rng_seed=None,
                     nch: Optional[int] = None) -> tf.Tensor:
  """One stored image uint8 `[h, w, c]` -> float32 `[S, S, nch]` in `[-1, 1]`.

  `random_crop=False`: centre crop to the largest square, then (if its side is not `S`)
  bilinear antialiased resize to `S x S`. `random_crop=True` (ImageNet): antialiased
  resize of the shorter side to `S`, then a square `S x S` crop at a position drawn from
  the stateless seed `rng_seed` (int, or int `[2]`). Channels: RGB -> grey when
  `nch == 1`, grey -> RGB when `nch == 3` (`nch=None` keeps `c`). Then `2 * x / 255 - 1`,
  clipped. On a square `S'`-sided digit this is exactly `digits.to_model_images`.
  """
  x = tf.convert_to_tensor(image)
  if x.dtype != tf.uint8:
    raise ValueError(f'preprocess_image expects uint8 pixels; got {x.dtype.name}.')
  size = int(image_size)
  shape = tf.shape(x)
  h, w = shape[0], shape[1]
  static_hw = x.shape[0], x.shape[1]
  if random_crop:
    if rng_seed is None:
      raise ValueError('random_crop=True needs rng_seed.')
    seed = tf.cast(rng_seed, tf.int64)
    if seed.shape.rank == 0:
      seed = tf.stack([tf.zeros([], tf.int64), seed])
    short = tf.cast(tf.minimum(h, w), tf.float32)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * size / short),
                                     tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * size / short),
                                     tf.int32))
    x = _resize(tf.cast(x, tf.float32), new_h, new_w)
    x = tf.image.stateless_random_crop(x, tf.stack([size, size, tf.shape(x)[2]]), seed)
  else:
    short = tf.minimum(h, w)
    x = x[(h - short) // 2:(h - short) // 2 + short,
          (w - short) // 2:(w - short) // 2 + short]
    x = tf.cast(x, tf.float32)
    if None not in static_hw:  # sizes known while tracing: decide in Python
      if min(static_hw) != size:
        x = _resize(x, size, size)
    else:
      x = tf.cond(tf.equal(short, size), lambda: x, lambda: _resize(x, size, size))
  channels = x.shape[-1]
  if nch is not None and channels != nch:
    if channels == 3 and nch == 1:
      x = tf.image.rgb_to_grayscale(x)
    elif channels == 1 and nch == 3:
      x = tf.tile(x, [1, 1, 3])
    else:
      raise ValueError(f'Cannot turn {channels}-channel images into nch={nch}.')
  x = tf.ensure_shape(x, [size, size, nch or channels])
  return tf.clip_by_value(2.0 * x / 255.0 - 1.0, -1.0, 1.0)


def _adapt_channels(images: np.ndarray, nch: int) -> np.ndarray:
  """float32 `[N, S, S, 1]` -> `[N, S, S, nch]` (grey to RGB by tiling)."""
  if images.shape[-1] == nch:
    return images
  if images.shape[-1] == 1 and nch == 3:
    return np.repeat(images, 3, axis=-1)
  raise ValueError(f'Cannot turn {images.shape[-1]}-channel images into nch={nch}.')


# ------------------------------------------------------------------------ iterators


def _seed_words(seed: int):
  """A non-negative entropy word for `np.random.SeedSequence` from any int seed."""
  return int(seed) % (1 << 63)


class _IndexedBatches:
  """Host-local batches `[B_local, ...]` of an in-memory float32 array `[N, ...]`.

  Global batch `k` = positions `[k * B, (k + 1) * B)` of the stream that lists, epoch
  after epoch, `perm_e = default_rng([seed, e]).permutation(N)`; this process yields rows
  `[process_index * B_local, (process_index + 1) * B_local)` of it.
  """

  def __init__(self, data: np.ndarray, global_batch: int, seed: int, start_step: int,
               process_index: int, process_count: int):
    self._data = data
    self._b = global_batch
    self._lo = process_index * (global_batch // process_count)
    self._hi = self._lo + global_batch // process_count
    self._seed = _seed_words(seed)
    self._step = int(start_step)
    self._perms: Dict[int, np.ndarray] = {}

  def _perm(self, epoch: int) -> np.ndarray:
    if epoch not in self._perms:
      if len(self._perms) >= 4:
        self._perms.pop(min(self._perms))
      rng = np.random.default_rng([self._seed, epoch])
      self._perms[epoch] = rng.permutation(len(self._data))
    return self._perms[epoch]

  def indices(self, step: int) -> np.ndarray:
    """int64 `[B_local]`: the data rows of this process's share of global batch `step`."""
    n = len(self._data)
    pos = step * self._b + np.arange(self._lo, self._hi, dtype=np.int64)
    epochs = pos // n
    out = np.empty_like(pos)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self._perm(int(e))[pos[sel] % n]
    return out

  def __iter__(self):
    return self

  def __next__(self) -> np.ndarray:
    batch = self._data[self.indices(self._step)]
    self._step += 1
    return batch


class _ToyBatches:
  """Host-local `[B_local, 2]` batches: rows of `toy2d.sample(name, B, rng(seed, k))`."""

  def __init__(self, name: str, global_batch: int, seed: int, start_step: int,
               process_index: int, process_count: int):
    self._name = name
    self._b = global_batch
    self._lo = process_index * (global_batch // process_count)
    self._hi = self._lo + global_batch // process_count
    self._seed = _seed_words(seed)
    self._step = int(start_step)

  def __iter__(self):
    return self

  def __next__(self) -> np.ndarray:
    rng = np.random.default_rng([self._seed, self._step])
    self._step += 1
    return toy2d.sample(self._name, self._b, rng)[self._lo:self._hi]


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def tfds_dataset(builder: tfds.core.DatasetBuilder, split: str, *, image_size: int,
                 nch: int, random_crop: bool, shuffle_buffer: int, local_batch: int,
                 seed: int, start_step: int = 0, process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
  """The tf.data pipeline of a prepared tfds image builder (see the module docstring).

  Elements: float32 `[local_batch, S, S, nch]` in `[-1, 1]`, infinitely. Identical from
  `start_step` on to the stream started at 0 (resume skips encoded records).
  """
  share = tfds.even_splits(split, n=process_count)[process_index]
  n_local = builder.info.splits[share].num_examples
  if n_local == 0:
    raise ValueError(f'Process {process_index} of {process_count} gets no examples of '
                     f'{builder.name}/{split}.')
  start_epoch, skip = divmod(int(start_step) * local_batch, n_local)
  options = _options()
  records = builder.as_dataset(
      split=share, shuffle_files=False,
      decoders={'image': tfds.decode.SkipDecoding()},
      read_config=tfds.ReadConfig(try_autocache=False, options=options))
  records = records.map(lambda ex: ex['image'])  # encoded bytes; labels are unused
  seed_str = tf.constant(str(int(seed)))

  def epoch(e):
    # Epoch seed: a fingerprint of (seed, epoch, process_index), fixed across runs.
    epoch_seed = tf.strings.to_hash_bucket_fast(
        tf.strings.join([seed_str, tf.strings.as_string(e), str(process_index)], '/'),
        2**62)
    shuffled = records.shuffle(shuffle_buffer, seed=epoch_seed,
                               reshuffle_each_iteration=False)
    return shuffled.enumerate().map(lambda i, rec: (e * n_local + i, rec))

  ds = tf.data.Dataset.range(start_epoch, 2**62).flat_map(epoch).skip(skip)
  decode = builder.info.features['image'].decode_example

  def preprocess(position, encoded):
    example_seed = tf.stack([tf.constant(int(seed), tf.int64),
                             position * process_count + process_index])
    return preprocess_image(decode(encoded), image_size, random_crop, example_seed, nch)

  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return ds.with_options(options)


def _numpy_iterator(ds: tf.data.Dataset) -> Iterator[np.ndarray]:
  for batch in ds.as_numpy_iterator():
    yield np.asarray(batch, np.float32)


def _digits_images(config, split: str, max_examples: Optional[int] = None) -> np.ndarray:
  builder = digits_tfds.prepare(config.data_dir or None)
  images, _ = digits_tfds.load_split(builder, split)
  if max_examples is not None:
    images = images[:max_examples]
  return _adapt_channels(digits.to_model_images(images, config.image_size), config.nch)


def check_available(config) -> None:
  """Raises `DatasetNotFoundError` (with the prepare command) unless `config.dataset`
  can be read: toys and digits always can, tfds datasets once prepared. Reads nothing."""
  if config.dataset not in TOY_DATASETS and config.dataset != 'digits':
    tfds_builder(config.dataset, config.data_dir)


def create_iterator(config, *, split: Optional[str] = None, start_step: int = 0,
                    process_index: int = 0, process_count: int = 1,
                    batch_size: Optional[int] = None,
                    seed: Optional[int] = None) -> Iterator[np.ndarray]:
  """Infinite iterator of this process's batches, deterministic given (seed, step).

  Yields float32 `[batch_size // process_count, S, S, nch]` in `[-1, 1]` for image
  datasets and `[batch_size // process_count, 2]` for 2D toys. `batch_size` is global
  (default `config.batch_size`), `seed` defaults to `config.seed`, `split` to
  `config.split`. The batches from `start_step` on equal those a fresh iterator yields
  after `start_step` batches. Reads `config.dataset`, `data_dir`, `image_size`, `nch`,
  `random_crop`, `shuffle_buffer`.
  """
  split = config.split if split is None else split
  batch_size = int(config.batch_size if batch_size is None else batch_size)
  seed = int(config.seed if seed is None else seed)
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f'Need 0 <= process_index ({process_index}) < process_count '
                     f'({process_count}).')
  if batch_size <= 0 or batch_size % process_count:
    raise ValueError(f'The global batch size ({batch_size}) must be a positive multiple '
                     f'of the number of processes ({process_count}).')
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0; got {start_step}.')
  name = config.dataset
  common = dict(start_step=start_step, process_index=process_index,
                process_count=process_count)
  if name in TOY_DATASETS:
    return _ToyBatches(name, batch_size, seed, **common)
  if name == 'digits':
    return _IndexedBatches(_digits_images(config, split), batch_size, seed, **common)
  builder = tfds_builder(name, config.data_dir)
  ds = tfds_dataset(builder, split, image_size=config.image_size, nch=config.nch,
                    random_crop=config.random_crop, shuffle_buffer=config.shuffle_buffer,
                    local_batch=batch_size // process_count, seed=seed, **common)
  return _numpy_iterator(ds)


def load_array(config, split: str, max_examples: Optional[int] = None) -> np.ndarray:
  """The first `max_examples` (default all) images of `split` in stored order, no
  shuffle, centre-cropped even when `config.random_crop`: float32 `[N, S, S, nch]`.

  For 2D toys: a fixed sample of `max_examples or TOY_SPLIT_SIZE` points `[N, 2]` that
  depends only on the split name (not on `config.seed`).
  """
  name = config.dataset
  if name in TOY_DATASETS:
    n = TOY_SPLIT_SIZE if max_examples is None else int(max_examples)
    rng = np.random.default_rng([0x5EED, *split.encode()])
    return toy2d.sample(name, n, rng)
  if name == 'digits':
    return _digits_images(config, split, max_examples)
  builder = tfds_builder(name, config.data_dir)
  ds = builder.as_dataset(
      split=split, shuffle_files=False,
      read_config=tfds.ReadConfig(try_autocache=False, options=_options()))
  if max_examples is not None:
    ds = ds.take(int(max_examples))
  ds = ds.map(lambda ex: preprocess_image(ex['image'], config.image_size, False, None,
                                          config.nch),
              num_parallel_calls=tf.data.AUTOTUNE)
  batches = list(ds.batch(256).as_numpy_iterator())
  shape = (0, config.image_size, config.image_size, config.nch)
  return np.concatenate(batches, 0) if batches else np.zeros(shape, np.float32)


def num_examples(config, split: str) -> int:
  """Examples in `split` (2D toys: `TOY_SPLIT_SIZE`, the size of `load_array`)."""
  name = config.dataset
  if name in TOY_DATASETS:
    return TOY_SPLIT_SIZE
  if name == 'digits':
    if split not in digits.SPLITS:
      raise ValueError(f'digits has splits {sorted(digits.SPLITS)}; got {split!r}.')
    lo, hi = digits.SPLITS[split]
    return hi - lo
  return int(tfds_builder(name, config.data_dir).info.splits[split].num_examples)
