"""The input pipeline: batch shapes and ranges, per-process shares, resume determinism,
the digits contract with `digits.to_model_images`, preprocessing, and the error for a
dataset that is not prepared. Offline: data lives in temporary data_dirs."""

import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from hat_ebm_jax import input_pipeline
from hat_ebm_jax.datasets import digits
from hat_ebm_jax.datasets import digits_tfds


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """A data_dir with the digits builder prepared (once for the module)."""
  path = str(tmp_path_factory.mktemp('tfds'))
  digits_tfds.prepare(path)
  return path


def _config(data_dir='', **overrides):
  c = ml_collections.ConfigDict(dict(
      dataset='digits', data_dir=data_dir, split='train', image_size=16, nch=1,
      random_crop=False, shuffle_buffer=500, batch_size=32, seed=0))
  c.update(overrides)
  return c


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _sorted_rows(x):
  """The rows of `x` `[N, ...]` in lexicographic order (compare sets, order aside)."""
  flat = x.reshape(len(x), -1)
  return flat[np.lexsort(flat.T[::-1])]


# ------------------------------------------------------------------------ digits


@pytest.mark.parametrize('image_size', [16, 32])
def test_digits_batches_are_float32_in_minus1_1(data_dir, image_size):
  it = input_pipeline.create_iterator(_config(data_dir, image_size=image_size))
  for batch in _take(it, 3):
    assert batch.shape == (32, image_size, image_size, 1)
    assert batch.dtype == np.float32
    assert batch.min() >= -1.0 and batch.max() <= 1.0
    assert batch.min() == -1.0 and batch.max() > 0.5  # background and ink


def test_digits_epoch_is_exactly_the_preprocessed_split(data_dir):
  # 1497 = 3 * 499: three batches are one epoch.
  it = input_pipeline.create_iterator(_config(data_dir, batch_size=499))
  epoch = np.concatenate(_take(it, 3))
  expected = digits.to_model_images(digits.load('train')[0], 16)
  assert epoch.shape == expected.shape
  np.testing.assert_allclose(_sorted_rows(epoch), _sorted_rows(expected), atol=1e-6)
  next_epoch = np.concatenate(_take(it, 3))
  np.testing.assert_allclose(_sorted_rows(next_epoch), _sorted_rows(expected), atol=1e-6)
  assert not np.array_equal(next_epoch, epoch)  # reshuffled


def test_digits_test_split_and_three_channels(data_dir):
  c = _config(data_dir, split='test', nch=3, batch_size=300)
  batch = next(input_pipeline.create_iterator(c))
  assert batch.shape == (300, 16, 16, 3)
  np.testing.assert_array_equal(batch[..., 0], batch[..., 2])  # grey tiled to RGB
  expected = digits.to_model_images(digits.load('test')[0], 16)
  np.testing.assert_allclose(_sorted_rows(batch[..., :1]), _sorted_rows(expected),
                             atol=1e-6)


def test_load_array_and_num_examples_of_digits(data_dir):
  c = _config(data_dir)
  test = input_pipeline.load_array(c, 'test')
  np.testing.assert_allclose(test, digits.to_model_images(digits.load('test')[0], 16),
                             atol=1e-6)  # stored order, no shuffle
  assert input_pipeline.load_array(c, 'train', max_examples=10).shape == (10, 16, 16, 1)
  assert input_pipeline.num_examples(c, 'train') == 1497
  assert input_pipeline.num_examples(c, 'test') == 300


def test_digits_are_prepared_on_first_use(tmp_path):
  c = _config(str(tmp_path), batch_size=8)
  assert next(input_pipeline.create_iterator(c)).shape == (8, 16, 16, 1)
  assert digits_tfds.builder(str(tmp_path)).is_prepared()


def test_processes_that_start_at_once_on_a_fresh_data_dir_all_get_the_digits(tmp_path):
  """A seed sweep starts its runs at once: each process finds the digits prepared (one
  builds them, the others wait for it), none fails on tfds' rename of the build folder."""
  code = ('import sys; from hat_ebm_jax.datasets import digits_tfds; '
          'b = digits_tfds.prepare(sys.argv[1]); '
          'print(b.info.splits["train"].num_examples)')
  procs = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'})
           for _ in range(3)]
  outs = [p.communicate(timeout=300) for p in procs]
  assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outs]
  assert [out.split()[-1] for out, _ in outs] == ['1497'] * 3


# ------------------------------------------- determinism, resume, processes (all kinds)


def _iterator_factories(data_dir):
  """name -> make(start_step, process_index, process_count, seed) -> iterator."""

  def digits_make(start_step=0, process_index=0, process_count=1, seed=0):
    return input_pipeline.create_iterator(
        _config(data_dir), start_step=start_step, process_index=process_index,
        process_count=process_count, seed=seed)

  def toy_make(start_step=0, process_index=0, process_count=1, seed=0):
    return input_pipeline.create_iterator(
        _config(dataset='eight_gaussians'), start_step=start_step,
        process_index=process_index, process_count=process_count, seed=seed)

  def tfds_make(start_step=0, process_index=0, process_count=1, seed=0):
    # The tf.data path of cifar10/celeb_a/imagenet2012, run on the digits records.
    ds = input_pipeline.tfds_dataset(
        digits_tfds.builder(data_dir), 'train', image_size=16, nch=1,
        random_crop=True, shuffle_buffer=500, local_batch=32 // process_count,
        seed=seed, start_step=start_step, process_index=process_index,
        process_count=process_count)
    return ds.as_numpy_iterator()

  return {'digits': digits_make, 'toy': toy_make, 'tfds': tfds_make}


@pytest.mark.parametrize('kind', ['digits', 'toy', 'tfds'])
def test_resuming_at_step_s_yields_the_batches_from_s_on(data_dir, kind):
  make = _iterator_factories(data_dir)[kind]
  # 1497 / 32 = 46.8 batches per epoch: resuming at 44 crosses an epoch boundary.
  for start in (5, 44):
    fresh = _take(make(), start + 4)[start:]
    resumed = _take(make(start_step=start), 4)
    for a, b in zip(fresh, resumed):
      np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('kind', ['digits', 'toy', 'tfds'])
def test_same_seed_same_batches_other_seed_other_order(data_dir, kind):
  make = _iterator_factories(data_dir)[kind]
  a, b, c = (next(make(seed=s)) for s in (0, 0, 1))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize('kind', ['digits', 'toy'])
def test_process_shares_split_the_global_batch(data_dir, kind):
  make = _iterator_factories(data_dir)[kind]
  whole = _take(make(), 3)
  share0 = _take(make(process_index=0, process_count=2), 3)
  share1 = _take(make(process_index=1, process_count=2), 3)
  for w, s0, s1 in zip(whole, share0, share1):
    assert s0.shape[0] == s1.shape[0] == w.shape[0] // 2
    np.testing.assert_array_equal(np.concatenate([s0, s1]), w)


def test_digits_process_shares_are_disjoint_examples(data_dir):
  c = _config(data_dir, batch_size=64)
  loaded = input_pipeline.create_iterator(c, process_index=0, process_count=2)
  rows = [loaded.indices(k) for k in range(3)]  # data rows, not pixels (duplicates)
  other = input_pipeline.create_iterator(c, process_index=1, process_count=2)
  for k, r0 in enumerate(rows):
    assert not set(r0) & set(other.indices(k))


def test_tfds_process_shares_are_disjoint_and_cover_the_split(data_dir):
  builder = digits_tfds.builder(data_dir)
  shares = []
  # even_splits gives 749 + 748 records; batch sizes that tile one epoch exactly.
  for index, local_batch, steps in ((0, 107, 7), (1, 68, 11)):
    ds = input_pipeline.tfds_dataset(
        builder, 'train', image_size=8, nch=1, random_crop=False, shuffle_buffer=100,
        local_batch=local_batch, seed=0, process_index=index, process_count=2)
    shares.append(np.concatenate(_take(ds.as_numpy_iterator(), steps)))
  assert len(shares[0]) + len(shares[1]) == 1497
  union = np.concatenate(shares)
  expected = digits.to_model_images(digits.load('train')[0], 8)
  np.testing.assert_allclose(_sorted_rows(union), _sorted_rows(expected), atol=1e-6)


def test_batch_size_must_divide_among_processes(data_dir):
  with pytest.raises(ValueError, match='multiple of the number of processes'):
    input_pipeline.create_iterator(_config(data_dir, batch_size=33), process_count=2)
  with pytest.raises(ValueError, match='process_index'):
    input_pipeline.create_iterator(_config(data_dir), process_index=2, process_count=2)


def test_toy_batches_are_points(data_dir):
  it = input_pipeline.create_iterator(_config(dataset='pinwheel', batch_size=64),
                                      process_index=1, process_count=4)
  batch = next(it)
  assert batch.shape == (16, 2) and batch.dtype == np.float32
  points = input_pipeline.load_array(_config(dataset='pinwheel'), 'test')
  assert points.shape == (input_pipeline.num_examples(_config(dataset='pinwheel'),
                                                      'test'), 2)
  np.testing.assert_array_equal(
      points, input_pipeline.load_array(_config(dataset='pinwheel', seed=7), 'test'))


# ------------------------------------------------------------------- missing datasets


@pytest.mark.parametrize('name', ['cifar10', 'celeb_a', 'imagenet2012'])
def test_unprepared_dataset_raises_with_how_to_prepare(tmp_path, name):
  empty = str(tmp_path / 'empty_tfds')
  os.makedirs(empty)
  c = _config(empty, dataset=name, image_size=32, nch=3)
  with pytest.raises(input_pipeline.DatasetNotFoundError) as info:
    input_pipeline.create_iterator(c)
  message = str(info.value)
  assert isinstance(info.value, FileNotFoundError)
  assert repr(name) in message and empty in message
  assert (f'python -m hat_ebm_jax.prepare_data --dataset={name}' in message
          and f'--data_dir={empty}' in message)
  if name == 'celeb_a':
    assert '--manual_dir' in message and 'img_align_celeba.zip' in message
    assert 'list_eval_partition.txt' in message
  if name == 'imagenet2012':
    assert 'ILSVRC2012_img_train.tar' in message and 'ILSVRC2012_img_val.tar' in message
  with pytest.raises(input_pipeline.DatasetNotFoundError):
    input_pipeline.num_examples(c, 'train')
  assert not any(files for _, _, files in os.walk(empty))  # nothing was downloaded


# ----------------------------------------------------------------------- preprocessing


def test_center_crop_and_resize_of_a_non_square_image():
  # 40 x 60: the centre 40 x 40 square is white, the 10-pixel side margins black.
  image = np.zeros((40, 60, 3), np.uint8)
  image[:, 10:50] = 255
  out = np.asarray(input_pipeline.preprocess_image(image, 16))
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, 1.0, atol=1e-6)  # the margins were cropped away
  grey = np.asarray(input_pipeline.preprocess_image(image[:, ::-1], 16, nch=1))
  assert grey.shape == (16, 16, 1)


def test_random_crop_resizes_the_shorter_side_then_crops_by_seed():
  rows = np.linspace(0, 255, 40)[:, None] * np.ones((1, 60))
  image = np.repeat(rows[..., None], 3, -1).round().astype(np.uint8)  # vertical ramp
  image[:, :, 1] = np.linspace(0, 255, 60).round().astype(np.uint8)  # horizontal ramp
  crops = [np.asarray(input_pipeline.preprocess_image(image, 16, True, s))
           for s in (0, 0, 1, 2, 3)]
  for crop in crops:
    assert crop.shape == (16, 16, 3)
    assert crop.min() >= -1.0 and crop.max() <= 1.0
    # The shorter (vertical) side was resized to 16, so the full ramp is kept.
    assert crop[0, :, 0].max() < -0.9 and crop[-1, :, 0].min() > 0.9
  np.testing.assert_array_equal(crops[0], crops[1])
  assert len({c[0, 0, 1].item() for c in crops[1:]}) > 1  # seeds move the crop sideways


def test_preprocess_image_is_digits_to_model_images_on_digits():
  images = digits.load('test')[0][:20]
  for size in (8, 16, 32):
    ours = np.stack([np.asarray(input_pipeline.preprocess_image(x, size))
                     for x in images])
    np.testing.assert_array_equal(ours, digits.to_model_images(images, size))


def test_preprocess_image_with_unknown_sizes_as_in_imagenet_records():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (37, 50, 3)).astype(np.uint8)
  spec = tf.TensorSpec([None, None, 3], tf.uint8)
  for random_crop in (False, True):
    traced = tf.function(
        lambda x, rc=random_crop: input_pipeline.preprocess_image(x, 16, rc, 5),
        input_signature=[spec])
    np.testing.assert_allclose(
        traced(image), input_pipeline.preprocess_image(image, 16, random_crop, 5),
        atol=1e-6)
  square = image[:16, :16]  # already at the target size: no resize at all
  np.testing.assert_allclose(
      tf.function(lambda x: input_pipeline.preprocess_image(x, 16),
                  input_signature=[spec])(square),
      2 * square.astype(np.float32) / 255 - 1, atol=1e-6)
