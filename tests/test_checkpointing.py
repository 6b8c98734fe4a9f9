"""Pretrained weights reach joint mode from the authors' TF checkpoints, directly or through
the `hat_ebm_jax.pretrained` CLI, and bad weights never get written or loaded silently."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from hat_ebm_jax import convert, models, pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def gen32_prefix(ref_dir):
  return os.path.join(ref_dir, 'gen_sngan32', 'ckpt')


def convert_cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'hat_ebm_jax.pretrained', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def assert_trees_equal(a, b):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_convert_cli_writes_weights_that_joint_mode_loads(tmp_path, gen32_prefix):
  out = tmp_path / 'gen'
  p = convert_cli(f'--tf_checkpoint={gen32_prefix}', '--net=gen_sngan32',
                  '--out_factor=2.0', f'--out={out}')
  assert p.returncode == 0, p.stderr[-3000:]
  assert '126,019 trainable parameters' in p.stdout
  module, tf_vars = convert.from_tf_checkpoint(gen32_prefix, 'gen_sngan32', out_factor=2.0)
  loaded = pretrained.load_pretrained(str(out), module, 'gen_sngan32')
  assert_trees_equal(loaded, tf_vars)


def test_joint_mode_reads_a_tf_checkpoint_prefix_directly(gen32_prefix):
  module = models.create('gen_sngan32', ngf=32, out_factor=2.0)
  loaded = pretrained.load_pretrained(gen32_prefix, module, 'gen_sngan32')
  _, tf_vars = convert.from_tf_checkpoint(gen32_prefix, 'gen_sngan32')
  assert_trees_equal(loaded, tf_vars)


def test_convert_cli_refuses_a_mismatched_net_and_writes_nothing(tmp_path, ref_dir):
  out = tmp_path / 'ebm'
  p = convert_cli(f'--tf_checkpoint={os.path.join(ref_dir, "ebm_sngan64", "ckpt")}',
                  '--net=ebm_sngan32', f'--out={out}')
  assert p.returncode != 0
  assert 'does not fit the net' in p.stderr and 'mismatches' in p.stderr
  assert not out.exists()


def test_convert_cli_never_overwrites_an_existing_directory(tmp_path, gen32_prefix):
  out = tmp_path / 'gen'
  out.mkdir()
  (out / 'keep.txt').write_text('precious')
  p = convert_cli(f'--tf_checkpoint={gen32_prefix}', '--net=gen_sngan32', f'--out={out}')
  assert p.returncode != 0 and 'not empty' in p.stderr
  assert (out / 'keep.txt').read_text() == 'precious'
  assert sorted(x.name for x in out.iterdir()) == ['keep.txt']


def test_weights_of_another_net_are_refused_on_load(tmp_path, gen32_prefix):
  module, tf_vars = convert.from_tf_checkpoint(gen32_prefix, 'gen_sngan32')
  pretrained.save_pretrained(str(tmp_path / 'g'), 'gen_sngan32', models.net_kwargs(module),
                             tf_vars)
  with pytest.raises(ValueError, match='gen_sngan64'):
    pretrained.load_pretrained(str(tmp_path / 'g'), models.create('gen_sngan64'),
                               'gen_sngan64')
  wider = models.create('gen_sngan32', ngf=64)
  with pytest.raises(ValueError, match='does not fit'):
    pretrained.load_pretrained(str(tmp_path / 'g'), wider, 'gen_sngan32')


def test_missing_weights_name_the_three_accepted_sources(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match='hat_ebm_jax.pretrained.*TF checkpoint prefix.*autoencoder'):
    pretrained.load_pretrained(str(tmp_path / 'nothing'), models.create('gen_sngan32'),
                               'gen_sngan32')
