"""prepare_data: digits are prepared offline; datasets needing hand-downloaded files say
which, before any network access. No test downloads anything."""

import os
import subprocess
import sys

import pytest

from hat_ebm_jax import input_pipeline
from hat_ebm_jax import prepare_data
from hat_ebm_jax.datasets import digits_tfds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_prepares_digits_into_data_dir(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-m', 'hat_ebm_jax.prepare_data', '--dataset=digits',
       f'--data_dir={tmp_path}'], capture_output=True, text=True, env=env, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  builder = digits_tfds.builder(str(tmp_path))
  assert builder.is_prepared()
  assert str(builder.data_dir) in result.stdout  # says where
  assert builder.info.splits['train'].num_examples == 1497
  assert builder.info.splits['test'].num_examples == 300


def test_prepare_is_idempotent_and_returns_the_records_folder(tmp_path, capsys):
  first = prepare_data.prepare('digits', str(tmp_path))
  second = prepare_data.prepare('digits', str(tmp_path))
  assert first == second and os.path.isdir(first)
  assert first.startswith(str(tmp_path))
  assert first in capsys.readouterr().out


def test_toys_need_no_preparation(capsys):
  assert prepare_data.prepare('two_rings') == ''
  assert 'nothing to prepare' in capsys.readouterr().out


def test_celeb_a_without_manual_dir_names_the_manual_files(tmp_path):
  with pytest.raises(input_pipeline.DatasetNotFoundError) as info:
    prepare_data.prepare('celeb_a', str(tmp_path))
  message = str(info.value)
  assert '--manual_dir' in message
  for name in input_pipeline.MANUAL_FILES['celeb_a']:
    assert name in message
  assert not any(files for _, _, files in os.walk(tmp_path))  # nothing downloaded


def test_imagenet_with_an_incomplete_manual_dir_lists_what_is_missing(tmp_path):
  manual = tmp_path / 'manual'
  manual.mkdir()
  (manual / 'ILSVRC2012_img_train.tar').write_bytes(b'')
  with pytest.raises(input_pipeline.DatasetNotFoundError,
                     match=r'lacks ILSVRC2012_img_val\.tar for imagenet2012'):
    prepare_data.prepare('imagenet2012', str(tmp_path / 'tfds'), str(manual))
