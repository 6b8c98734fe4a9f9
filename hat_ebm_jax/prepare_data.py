r"""Prepares a dataset for the input pipeline, once, before training (the counterpart of
the original code's prepare_tf_records.py).

    python -m hat_ebm_jax.prepare_data --dataset=NAME [--manual_dir=DIR] [--data_dir=DIR]

* `digits`: writes the scikit-learn digits builder (`datasets/digits_tfds.py`) into
  data_dir; offline, seconds. (The pipeline also does this on first use.)
* `cifar10`: tfds download_and_prepare (downloads ~160 MB).
* `celeb_a`, `imagenet2012`: the source files must first be downloaded by hand into
  --manual_dir (the message of a missing file lists them and where they come from); tfds
  then builds the records from them.
* 2D toys: nothing to prepare (sampled on the fly).

`--data_dir` defaults to the tfds default (`$TFDS_DATA_DIR` or ~/tensorflow_datasets);
train with the same `--config.data_dir`.
"""

import os
from typing import Optional

from absl import app
from absl import flags
from etils import epath
import tensorflow_datasets as tfds

from hat_ebm_jax import cli, input_pipeline
from hat_ebm_jax.datasets import digits_tfds

_DATASET = flags.DEFINE_enum(
    'dataset', None, list(input_pipeline.IMAGE_DATASETS + input_pipeline.TOY_DATASETS),
    'Dataset to prepare.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', '', 'tfds data_dir to write to ("" = the tfds default).')
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', '', 'Folder holding the hand-downloaded files (celeb_a, imagenet2012).')


def check_manual_files(dataset: str, manual_dir: Optional[str],
                       data_dir: Optional[str] = None) -> None:
  """Raises `DatasetNotFoundError` unless `manual_dir` holds the files `dataset` needs."""
  needed = input_pipeline.MANUAL_FILES.get(dataset, ())
  if not needed:
    return
  how = input_pipeline.prepare_instructions(dataset, data_dir or '')
  if not manual_dir:
    raise input_pipeline.DatasetNotFoundError(
        f'{dataset} cannot be downloaded automatically: pass --manual_dir=DIR with the '
        f'manual files.\n{how}')
  missing = [f for f in needed if not (epath.Path(manual_dir) / f).exists()]  # gs:// ok
  if missing:
    raise input_pipeline.DatasetNotFoundError(
        f'--manual_dir={manual_dir} lacks {", ".join(missing)} for {dataset}.\n'
        f'{how}')


def prepare(dataset: str, data_dir: Optional[str] = None,
            manual_dir: Optional[str] = None) -> str:
  """Prepares `dataset` in `data_dir`; returns the folder of its records ('' for toys).

  Raises `DatasetNotFoundError` when manual files are needed and missing (before any
  network access).
  """
  data_dir = data_dir or None
  if dataset in input_pipeline.TOY_DATASETS:
    print(f'{dataset} is a 2D toy sampled on the fly: nothing to prepare.')
    return ''
  if dataset == 'digits':
    builder = digits_tfds.prepare(data_dir)
    print(f'digits (scikit-learn, offline) prepared in {builder.data_dir}')
    return os.fspath(builder.data_dir)
  if dataset not in input_pipeline.TFDS_DATASETS:
    raise ValueError(f'Unknown dataset {dataset!r}; choose one of '
                     f'{", ".join(input_pipeline.IMAGE_DATASETS)}.')
  builder = tfds.builder(dataset, data_dir=data_dir)
  if builder.is_prepared():
    print(f'{dataset} is already prepared in {builder.data_dir}')
    return os.fspath(builder.data_dir)
  check_manual_files(dataset, manual_dir, data_dir)
  try:
    import importlib_resources  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:  # tfds 4.9 uses it to find its checksums, undeclared
    raise ImportError('tensorflow-datasets needs the package importlib_resources to '
                      f'prepare {dataset}: pip install importlib_resources') from e
  print(f'Preparing {dataset} into {builder.data_dir}'
        + (f' from {manual_dir}' if manual_dir else ' (downloading)') + ' ...')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir or None))
  splits = {k: v.num_examples for k, v in builder.info.splits.items()}
  print(f'{dataset} prepared in {builder.data_dir}: {splits}')
  return os.fspath(builder.data_dir)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with cli.user_errors(input_pipeline.DatasetNotFoundError):
    prepare(_DATASET.value, _DATA_DIR.value, _MANUAL_DIR.value)


if __name__ == '__main__':
  flags.mark_flag_as_required('dataset')
  cli.run(main)
