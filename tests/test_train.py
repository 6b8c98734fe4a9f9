"""End-to-end training on `configs/tiny.py`: every mode runs, checkpoints, resumes exactly,
survives SIGTERM, stops on divergence, and refuses bad input without touching the workdir."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hat_ebm_jax import checkpointing, monitoring, train
from tests.conftest import max_rel_diff_per_tensor, tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main_cmd(workdir, *overrides, mode='synthesis'):
  return [sys.executable, '-m', 'hat_ebm_jax.main', f'--config={REPO}/configs/tiny.py:{mode}',
          f'--workdir={workdir}', *overrides]


def run_main(workdir, *overrides, mode='synthesis', check=True):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
  p = subprocess.run(main_cmd(workdir, *overrides, mode=mode), cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=600)
  if check and p.returncode != 0:
    raise AssertionError(f'main failed ({p.returncode}):\n{p.stderr[-4000:]}')
  return p


def params_of(workdir, step=None):
  raw = checkpointing.restore_raw(workdir, step)
  return raw['params']


def test_synthesis_trains_and_writes_checkpoints_summaries_and_samples(tmp_path):
  result = train.run(tiny(), str(tmp_path))
  assert result['step'] == 6
  assert np.isfinite(result['ebm_loss']) and np.isfinite(result['gen_loss'])
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                 if p.name.isdigit())
  assert steps == [3, 6]
  final = np.load(tmp_path / 'samples' / 'final.npz')
  assert set(final.files) >= {'hat', 'gen'}
  assert final['hat'].shape == (16, 16, 16, 1) and final['hat'].dtype == np.float32
  assert np.all(np.abs(final['gen']) <= 1.0 + 1e-6)  # gen_factor 1 * tanh
  for name in ('hat_000003.png', 'gen_000003.png', 'data_000003.png', 'final_hat.png'):
    assert (tmp_path / 'samples' / name).exists(), name
  assert any(p.name.startswith('events.out.tfevents') for p in tmp_path.iterdir())


@pytest.fixture(scope='module')
def decoder_workdir(tmp_path_factory):
  """An autoencoder workdir (1 step): the generator weights of joint mode."""
  ae = tmp_path_factory.mktemp('ae')
  train.run(tiny('autoencoder', num_training_steps=1), str(ae))
  return ae


def mode_config(mode, decoder_workdir, **overrides):
  """`configs/tiny.py:<mode>`; joint retrofits the decoder of `decoder_workdir`."""
  if mode == 'joint':
    overrides = dict(gen_type='gen_decoder32', gen_factor=1.0,
                     gen_weights=str(decoder_workdir), **overrides)
  return tiny(mode, **overrides)


@pytest.mark.parametrize('mode', ['synthesis', 'autoencoder', 'joint'])
def test_every_mode_resumes_from_its_checkpoint_like_an_uninterrupted_run(
    mode, decoder_workdir, tmp_path):
  """2 steps straight == 1 step, a checkpoint, 1 more step from it (in this process;
  the fresh-process resume is the slow test below): the parameters after the resumed
  step, so the optimizer state, the synthesis bank and the data position, come back."""
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  train.run(mode_config(mode, decoder_workdir, num_training_steps=2, checkpoint_freq=1),
            str(straight))
  train.run(mode_config(mode, decoder_workdir, num_training_steps=1, checkpoint_freq=1),
            str(split))
  assert int(checkpointing.restore_raw(split)['step']) == 1
  train.run(mode_config(mode, decoder_workdir, num_training_steps=2, checkpoint_freq=1),
            str(split))
  raw_a, raw_b = checkpointing.restore_raw(straight), checkpointing.restore_raw(split)
  assert int(raw_a['step']) == int(raw_b['step']) == 2
  assert max_rel_diff_per_tensor(raw_b['params'], raw_a['params']) <= 1e-6
  if mode == 'synthesis':
    assert max_rel_diff_per_tensor(raw_b['bank'], raw_a['bank']) <= 1e-6


@pytest.mark.slow
def test_resume_in_a_fresh_process_equals_an_uninterrupted_run(tmp_path):
  """6 steps straight == 3 steps, a new process, 3 more (parameters to 1e-6)."""
  straight, split = tmp_path / 'straight', tmp_path / 'split'
  run_main(straight, '--config.num_training_steps=6')
  run_main(split, '--config.num_training_steps=3')
  assert checkpointing.restore_raw(split)['step'] == 3
  run_main(split, '--config.num_training_steps=6')
  raw_a, raw_b = checkpointing.restore_raw(straight), checkpointing.restore_raw(split)
  assert int(raw_b['step']) == 6
  assert max_rel_diff_per_tensor(raw_b['params'], raw_a['params']) <= 1e-6
  assert max_rel_diff_per_tensor(raw_b['bank'], raw_a['bank']) <= 1e-6


def test_sigterm_saves_at_the_next_step_and_exits_zero(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1')
  proc = subprocess.Popen(
      main_cmd(tmp_path, '--config.num_training_steps=100000',
               '--config.checkpoint_freq=100000', '--config.plot_freq=100000'),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 300
  for line in proc.stdout:
    if 'First step' in line or time.time() > deadline:
      break
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  raw = checkpointing.restore_raw(tmp_path)
  assert 1 <= int(raw['step']) < 100000
  assert 'Preempted' in out


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  train.run(tiny(num_training_steps=3), str(tmp_path))
  with pytest.raises(monitoring.DivergenceError, match='step 4') as e:
    train.run(tiny(num_training_steps=6, data_epsilon=float('inf')), str(tmp_path))
  assert 'energy_data' in str(e.value) or 'ebm_loss' in str(e.value)
  assert checkpointing.create_manager(tmp_path, 3).latest_step() == 3


def test_autoencoder_trains_with_a_test_loss_and_its_decoder_drives_retrofit(tmp_path):
  ae, joint = tmp_path / 'ae', tmp_path / 'retrofit'
  result = train.run(tiny('autoencoder'), str(ae))
  assert np.isfinite(result['ae_loss'])
  final = np.load(ae / 'samples' / 'final.npz')
  assert {'gen', 'recon', 'data'} <= set(final.files)
  c = tiny('joint', gen_type='gen_decoder32', gen_factor=1.0, gen_weights=str(ae))
  result = train.run(c, str(joint))
  assert result['step'] == 6
  assert result['grad_norm_latent'] > 0 and np.isfinite(result['ebm_loss'])
  assert 'z_norm' in result


def test_final_metrics_score_raw_and_ema_weights_at_every_chain_length(tmp_path):
  result = train.run(tiny(final_metrics=True, chain_length_factors=(1, 2),
                          num_final_samples=32), str(tmp_path))
  names = [f'digits_fd_{k}' for k in ('floor', 'gen', 'hat', 'hat_2x', 'gen_ema',
                                        'hat_ema', 'hat_ema_2x')]
  assert set(names) <= set(result)  # and the second judge beside each
  assert {n.replace('digits_fd', 'digits_pca_fd') for n in names} <= set(result)
  assert result['digits_fd_hat_ema'] != result['digits_fd_hat']
  with np.load(tmp_path / 'samples' / 'final.npz') as final:
    assert final['hat_ema_2x'].shape == final['hat'].shape == (32, 16, 16, 1)


def test_a_synthesis_run_provides_the_generator_that_joint_mode_refines(tmp_path):
  synth, refine = tmp_path / 'synth', tmp_path / 'refine'
  train.run(tiny(num_training_steps=1), str(synth))
  result = train.run(tiny('joint', gen_weights=str(synth), num_training_steps=2),
                     str(refine))
  assert result['step'] == 2 and result['grad_norm_latent'] > 0
  gen = checkpointing.restore_raw(refine)['frozen']['gen']['params']
  assert max_rel_diff_per_tensor(gen, checkpointing.restore_raw(synth)['params']['gen']) == 0


def test_joint_mode_without_generator_weights_is_refused(tmp_path):
  with pytest.raises(ValueError, match='gen_weights'):
    train.run(tiny('joint'), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_joint_mode_with_missing_weights_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match='nowhere'):
    train.run(tiny('joint', gen_weights=str(tmp_path / 'nowhere')), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_workdir_of_another_experiment_is_refused_and_left_untouched(tmp_path):
  train.run(tiny(num_training_steps=3), str(tmp_path))
  before = sorted((str(p), p.stat().st_mtime) for p in tmp_path.rglob('*'))
  with pytest.raises(checkpointing.ConfigMismatchError, match='ebm_ngf'):
    train.run(tiny(num_training_steps=6, ebm_ngf=16), str(tmp_path))
  after = sorted((str(p), p.stat().st_mtime) for p in tmp_path.rglob('*'))
  assert before == after


def test_a_generator_of_another_architecture_is_refused_with_the_mismatches(tmp_path):
  ae = tmp_path / 'ae'
  train.run(tiny('autoencoder', num_training_steps=1), str(ae))
  c = tiny('joint', gen_type='gen_decoder32', gen_ngf=16, gen_weights=str(ae))
  with pytest.raises(ValueError, match='does not fit'):
    train.run(c, str(tmp_path / 'w'))


def test_unknown_config_override_is_rejected_by_main(tmp_path):
  p = run_main(tmp_path, '--config.mcmc_stepz=3', check=False)
  assert p.returncode != 0
  assert 'mcmc_stepz' in p.stderr
