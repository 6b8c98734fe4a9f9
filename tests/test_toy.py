"""2D toys end to end: `configs/toy2d.py` in synthesis and refinement (joint) mode on
points `[B, 2]`, the weak pretrained generator (`hat_ebm_jax.toy`, function and CLI), the
final MMDs of `G(z)` and `G(z) + y`, and that refinement beats its weak generator."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hat_ebm_jax import checkpointing, config_lib, models, toy, train
from tests.conftest import load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small enough for seconds on a loaded CPU; still every code path of a real run.
QUICK = dict(num_training_steps=10, batch_size=64, mcmc_steps=5, persistent_size=256,
             num_final_samples=200, num_plot_samples=200, log_freq=5, plot_freq=10,
             checkpoint_freq=10)


def toy_config(arg='', **overrides):
  c = load('toy2d', arg)
  for k, v in overrides.items():
    c[k] = v
  return c


def check_finished_toy_run(workdir, result, n):
  assert np.isfinite(result['mmd_gen']) and np.isfinite(result['mmd_hat'])
  saved = json.loads((workdir / 'final_metrics.json').read_text())
  assert set(saved) == {'mmd_gen', 'mmd_hat', 'mmd_gen_ema', 'mmd_hat_ema'}  # raw and EMA
  assert saved['mmd_hat'] == pytest.approx(result['mmd_hat'])
  final = np.load(workdir / 'samples' / 'final.npz')
  assert final['hat'].shape == (n, 2) and final['gen'].shape == (n, 2)
  assert final['hat'].dtype == np.float32 and np.all(np.isfinite(final['hat']))
  for name in ('hat_000010.png', 'gen_000010.png', 'data_000010.png', 'final_hat.png',
               'final_gen.png'):
    assert (workdir / 'samples' / name).stat().st_size > 0, name


def test_config_argument_picks_mode_and_dataset():
  c = toy_config()
  assert (c.mode, c.dataset, c.ebm_type, c.gen_type) == (
      'synthesis', 'eight_gaussians', 'ebm_toy', 'gen_toy')
  assert c.final_metrics and not c.clip_langevin_grad_res and c.use_noise
  config_lib.validate(c)
  assert (toy_config('refine').mode, toy_config('refine').dataset) == ('joint',
                                                                      'eight_gaussians')
  assert (toy_config('refine,two_rings').mode,
          toy_config('refine,two_rings').dataset) == ('joint', 'two_rings')
  assert toy_config('pinwheel').mode == 'synthesis'
  with pytest.raises(ValueError, match='unknown argument'):
    toy_config('refin')
  with pytest.raises(ValueError, match='gen_weights'):  # refinement needs a generator
    config_lib.validate(toy_config('refine'))


def test_synthesis_on_points_writes_samples_plots_and_mmds(tmp_path):
  c = toy_config(**QUICK)
  result = train.run(c, str(tmp_path))
  assert result['step'] == 10 and np.isfinite(result['gen_loss'])
  assert result['grad_norm_res'] > 0
  check_finished_toy_run(tmp_path, result, 200)
  xs, ys, h = toy.energy_grid(c, str(tmp_path), n=21)
  assert xs.shape == ys.shape == (21,) and h.shape == (21, 21) and np.all(np.isfinite(h))
  p = toy.density_from_energy(h, c.mcmc_temp)
  assert p.sum() == pytest.approx(1.0) and np.all(p >= 0)
  toy.plot_run(c, str(tmp_path), str(tmp_path / 'run.png'), metrics=result)
  assert (tmp_path / 'run.png').stat().st_size > 0


@pytest.mark.slow  # the command line of hat_ebm_jax.toy, in a subprocess
def test_weak_generator_cli_feeds_refinement(tmp_path):
  weak, run = tmp_path / 'weak', tmp_path / 'run'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO)
  p = subprocess.run([sys.executable, '-m', 'hat_ebm_jax.toy',
                      f'--config={REPO}/configs/toy2d.py:refine', f'--out={weak}',
                      '--steps=20'], cwd=REPO, env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  assert str(weak) in p.stdout
  meta = json.loads((weak / 'net.json').read_text())
  assert meta['net'] == 'gen_toy'
  assert meta['kwargs']['ngf'] == 64 and meta['kwargs']['nz'] == 2
  c = toy_config('refine', gen_weights=str(weak), **QUICK)
  result = train.run(c, str(run))
  assert result['step'] == 10
  assert result['grad_norm_latent'] > 0 and result['z_norm'] > 0  # z moves
  check_finished_toy_run(run, result, 200)
  # The generator is frozen: G(z) of the run is the weak generator's output.
  gen = checkpointing.restore_raw(run)['frozen']['gen']['params']
  module, variables = toy.fit_weak_generator(c, steps=20)
  del module
  np.testing.assert_allclose(gen['lin_1']['kernel'], variables['params']['lin_1']['kernel'],
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(FileExistsError):  # never overwrites weights
    toy.pretrain_weak_generator(c, str(weak), steps=1)


@pytest.mark.slow
def test_refinement_beats_its_weak_generator_in_mmd(tmp_path):
  """500 joint steps (the config has 600): measured mmd_hat / mmd_gen = 0.10, < 0, 0.17
  for seeds 0, 1, 2 (1000 final samples; mmd_gen ~0.05)."""
  c = toy_config('refine', num_training_steps=500, checkpoint_freq=500, plot_freq=500)
  c.gen_weights = toy.pretrain_weak_generator(c, str(tmp_path / 'weak'))
  result = train.run(c, str(tmp_path / 'run'))
  assert result['mmd_gen'] > 0.03  # the generator is weak
  assert result['mmd_hat'] < 0.5 * result['mmd_gen'], result


def test_toy_nets_round_trip_through_net_kwargs():
  """`models.net_kwargs` records what rebuilds the toy nets (written to net.json)."""
  for name, kw in (('ebm_toy', dict(ngf=8, depth=2, input_scale=2.0)),
                   ('gen_toy', dict(ngf=8, nz=3, out_factor=2.0))):
    module = models.create(name, **kw)
    assert models.create(name, **models.net_kwargs(module)) == module
