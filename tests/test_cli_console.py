"""What a command prints (hat_ebm_jax/cli.py): the package's INFO lines, libraries'
from WARNING up, no TPU probe on a TPU-less machine, one progress line per log_freq."""

import logging
import os
import subprocess
import sys

import pytest
from absl import logging as absl_logging

from hat_ebm_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _installed(*names):
  return lambda name: name in names


@pytest.mark.parametrize('environ, files, installed, want', [
    ({'JAX_PLATFORMS': 'tpu'}, [], ('libtpu',), None),  # the user's choice wins
    ({'JAX_PLATFORMS': 'cpu'}, ['/dev/accel0'], ('libtpu',), None),
    ({}, [], (), None),  # no libtpu: nothing noisy to avoid
    ({}, ['/dev/accel0', '/dev/accel1'], ('libtpu',), None),  # a TPU VM
    ({}, ['/dev/vfio'], ('libtpu',), None),  # a TPU v5e/v6e VM
    ({}, [], ('libtpu',), 'cpu'),
    ({}, ['/dev/nvidiactl'], ('libtpu',), 'cpu'),  # a GPU but no CUDA plugin
    ({}, ['/dev/nvidiactl'], ('libtpu', 'jax_cuda12_plugin'), 'cuda,cpu'),
])
def test_default_platforms(environ, files, installed, want):
  assert cli.default_platforms(environ, files, _installed(*installed)) == want


def _record(path, level=logging.INFO):
  return logging.LogRecord('absl', level, path, 1, 'msg', (), None)


def test_library_info_lines_are_dropped_and_the_package_s_kept():
  f = cli._OwnInfoOnly()  # pylint: disable=protected-access
  assert f.filter(_record(os.path.join(cli.PACKAGE_DIR, 'train.py')))
  assert f.filter(_record(os.path.join(cli.PACKAGE_DIR, 'modes', 'base.py')))
  assert not f.filter(_record('/site-packages/orbax/checkpoint/checkpoint_manager.py'))
  assert not f.filter(_record('/site-packages/clu/metric_writers/logging_writer.py'))
  assert f.filter(_record('/site-packages/orbax/x.py', logging.WARNING))
  assert f.filter(_record('/site-packages/orbax/x.py', logging.ERROR))


def test_progress_line_has_step_rate_eta_and_losses():
  times = iter([0.0, 2.0, 4.0])
  p = cli.Progress(10, start_step=0, clock=lambda: next(times))
  line = p.line(4, {'ebm_loss': 0.125, 'gen_loss': 2.0, 'energy_data': 1.0})
  assert line == 'step 4/10  2.00 steps/s  ETA 0:00:03  ebm_loss=0.125  gen_loss=2'
  assert p.line(10, {}) == 'step 10/10  3.00 steps/s  ETA 0:00:00'


@pytest.mark.slow  # a tiny training run in a subprocess (about 40 s on 2 cores)
def test_tiny_run_prints_at_most_40_lines_and_no_tpu_probe(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ('JAX_PLATFORMS', 'TF_CPP_MIN_LOG_LEVEL')}
  p = subprocess.run(
      [sys.executable, '-m', 'hat_ebm_jax.main', '--config=configs/tiny.py',
       f'--workdir={tmp_path / "w"}'], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=900)
  text = p.stdout + p.stderr
  assert p.returncode == 0, text[-4000:]
  lines = text.splitlines()
  assert len(lines) <= 40, f'{len(lines)} lines:\n{text}'
  # ... nor TensorFlow's import-time C++ lines ('oneDNN custom operations are on').
  for word in ('TPU_WORKER_HOSTNAMES', 'Failed to find host bounds', 'Traceback',
               'absl::InitializeLog', 'oneDNN'):
    assert word not in text, text
  progress = [l for l in lines if '] step ' in l and 'steps/s' in l]
  assert len(progress) == 3 and 'ETA' in progress[-1] and 'ebm_loss=' in progress[-1], text
  assert str(tmp_path / 'w') in text and 'Parameter checksum' in text


def test_tensorflow_imports_quietly_and_its_import_errors_still_show(tmp_path):
  """After `quiet_logging`, nothing of TF's import reaches standard error, whoever imports
  it (on an AVX-512 CPU TF 2.21 writes four lines there); standard error works after it.
  `quiet_logging` itself imports no TF: a command that never needs it does not pay."""
  code = ('import sys; from hat_ebm_jax import cli; cli.quiet_logging(); '
          'assert "tensorflow" not in sys.modules; import clu.metric_writers; '
          'assert "tensorflow" in sys.modules; print("after", file=sys.stderr)')
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  p = subprocess.run([sys.executable, '-c', code], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0 and p.stderr == 'after\n', p.stderr
  # A broken TensorFlow still fails loudly, with its traceback.
  (tmp_path / 'tensorflow').mkdir()
  (tmp_path / 'tensorflow' / '__init__.py').write_text('raise ImportError("broken tf")')
  p = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True,
                     env={**env, 'PYTHONPATH': f'{tmp_path}{os.pathsep}{REPO}'}, timeout=300)
  assert p.returncode == 1 and 'ImportError: broken tf' in p.stderr, p.stderr


def test_a_read_only_checkpoint_manager_logs_none_of_orbax_s_read_only_notes(tmp_path,
                                                                             caplog):
  """Evaluation opens the run's checkpoints read-only; orbax would warn twice each time
  that they are read-only. Its other warnings still pass."""
  from hat_ebm_jax import checkpointing  # pylint: disable=g-import-not-at-top
  (tmp_path / 'checkpoints').mkdir()
  with caplog.at_level(logging.WARNING, logger='absl'):
    checkpointing.read_only_manager(tmp_path).close()
    absl_logging.warning('Given directory is read only? a note from elsewhere, later')
  notes = [r.getMessage() for r in caplog.records]
  assert notes == ['Given directory is read only? a note from elsewhere, later']
