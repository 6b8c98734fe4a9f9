"""Evaluation (`config.mode = 'evaluate'`): a small digits model trained here is
evaluated from its checkpoint and from imported weights; its numbers (digits_fd of
G(z) and G(z) + y, OOD AUROCs) are written with everything needed to reproduce them and
come out the same twice; FID and MMD take the same path; bad input is refused before
anything is written."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import ood_checkpoints
from hat_ebm_jax import checkpointing, cli, config_lib, evaluate, fid, input_pipeline, metrics
from hat_ebm_jax import pretrained, sharding, train
from hat_ebm_jax.datasets import digits, glyphs
from hat_ebm_jax.fid import inception
from hat_ebm_jax.input_pipeline import DatasetNotFoundError
from tests.conftest import CONFIGS, load, snapshot, tiny, with_overrides

REPO = os.path.dirname(CONFIGS)

# The digits model of these tests: configs/digits.py, shortened (about a minute on 2 CPU
# cores). Its evaluation uses the same architecture keys.
TRAIN = dict(num_training_steps=60, batch_size=32, mcmc_steps=10, checkpoint_freq=30,
             plot_freq=10000, log_freq=30, num_final_samples=32, final_metrics=False)
EVAL = dict(mcmc_steps=10, num_eval_samples=256, eval_batch_size=64,
            num_saved_samples=100, chain_length_factors=(1,))


def eval_digits(**overrides):
  """`configs/digits.py:eval` for the test model (256 samples, 10 Langevin steps)."""
  return with_overrides(load('digits', 'eval'), **{**EVAL, **overrides})


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
  """A trained digits model: checkpoints at steps 30 and 60."""
  workdir = tmp_path_factory.mktemp('digits_run')
  train.run(with_overrides(load('digits'), **TRAIN), str(workdir))
  return workdir


@pytest.fixture(scope='module')
def first_eval(run_dir):
  """One evaluation of the latest checkpoint (raw weights), and the run's files before."""
  before = snapshot(run_dir)
  results = evaluate.run(eval_digits(), str(run_dir))
  return results, before


# ------------------------------------------------------------------ the digits model


@pytest.mark.slow
def test_digits_model_separates_real_digits_from_noise_shuffled_and_inverted(first_eval):
  results, _ = first_eval
  ood = results['ood']
  e_in = ood['in_distribution']
  assert (e_in['dataset'], e_in['split'], e_in['n']) == ('digits', 'test', 300)
  auroc = {k: v['auroc'] for k, v in ood['table'].items()}
  assert set(auroc) == {'noise', 'shuffled', 'inverted', 'constant', 'letters'}
  assert all('auroc_baseline' in v for v in ood['table'].values())
  # The 300 test digits, shuffled and inverted; 1,000 drawn images of each other set.
  assert {k: v['n'] for k, v in ood['table'].items()} == dict(
      noise=1000, shuffled=300, inverted=300, constant=1000, letters=1000)
  # Measured >= 0.9998 for these three with training seeds 0, 1 and 2.
  assert auroc['noise'] > 0.99
  assert auroc['inverted'] > 0.98
  assert auroc['shuffled'] > 0.95
  for k, v in auroc.items():
    assert results['metrics'][f'ood_auroc_{k}'] == v


@pytest.mark.slow
def test_ood_over_checkpoints_gives_each_step_the_evaluations_aurocs_and_their_average(
    first_eval, run_dir, tmp_path):
  """`python -m benchmarks.ood_checkpoints --workdir=...`: per kept checkpoint the raw and
  EMA energies' AUROCs, the last raw row equal to the evaluation's `ood.md`, then the raw
  weights averaged over the checkpoints; the table goes to WORKDIR/eval."""
  results, _ = first_eval
  workdir = tmp_path / 'run'
  shutil.copytree(run_dir, workdir, ignore=shutil.ignore_patterns('eval'))
  ood_checkpoints.main(['--workdir', str(workdir),
                        f'--override=eval_batch_size={EVAL["eval_batch_size"]}'])
  table = json.loads((workdir / 'eval' / 'ood_checkpoints.json').read_text())
  assert table['steps'] == [30, 60]
  assert [(r['label'], r['weights']) for r in table['rows']] == [
      ('step 30', 'raw'), ('step 30', 'ema'), ('step 60', 'raw'), ('step 60', 'ema'),
      ('average of steps 30-60 (2)', 'raw')]
  sets = set(results['ood']['table'])
  assert set(table['sets']) == sets
  assert {k: table['rows'][2][k] for k in sets} == {
      k: v['auroc'] for k, v in results['ood']['table'].items()}
  assert all(0.0 <= r[k] <= 1.0 for r in table['rows'] for k in sets)
  assert '| average of steps 30-60 (2) | raw |' in (
      workdir / 'eval' / 'ood_checkpoints.md').read_text()


@pytest.mark.slow
def test_ood_by_character_scores_each_letter_alone_as_the_evaluation_scores_a_set(
    run_dir, tmp_path):
  """`--by_character`: every character of the letters set gets the AUROC of its 72
  fixed draws against the test digits, by the evaluation's energy, in each row; the
  energy's correlation with the ink over the letters set comes with it."""
  workdir = tmp_path / 'run'
  shutil.copytree(run_dir, workdir, ignore=shutil.ignore_patterns('eval'))
  ood_checkpoints.main(['--workdir', str(workdir), '--steps=60', '--by_character',
                        f'--override=eval_batch_size={EVAL["eval_batch_size"]}'])
  table = json.loads((workdir / 'eval' / 'ood_checkpoints.json').read_text())
  raw, ema = table['rows']
  assert set(raw['characters']) == set(glyphs.CHARACTERS) == set(table['character_ink'])
  assert all(0.0 <= a <= 1.0 for r in (raw, ema) for a in r['characters'].values())
  assert raw['characters'] != ema['characters']
  assert all(-1.0 <= r['letters_ink_corr'] <= 1.0 for r in (raw, ema))
  # One character by hand: the evaluation's energy on its draws and on the digits.
  config = with_overrides(eval_digits(eval_ckpt_step=60), use_ema=False)
  mesh = sharding.create_mesh()
  mode, state, _ = evaluate.load_model(config, workdir, mesh)
  score = lambda x: evaluate.batched_apply(evaluate.energy_fn(mode, state, mesh), x,
                                           EVAL['eval_batch_size'], mesh)
  x_in = input_pipeline.load_array(config, config.ood_split, int(config.num_ood_samples))
  j = digits.to_model_images(glyphs.render_character('j'), config.image_size)
  assert raw['characters']['j'] == pytest.approx(metrics.ood_auroc(score(x_in), score(j)))
  md = (workdir / 'eval' / 'ood_checkpoints.md').read_text()
  assert '| character | ink | step 60 raw | step 60 ema |' in md and '| `j` |' in md


def test_ood_by_character_needs_the_digits(tmp_path):
  with pytest.raises(cli.UserError, match='--by_character scores the letters against the '
                                          'digits'):
    ood_checkpoints.main(['--workdir', str(tmp_path), '--by_character',
                          '--config=cifar10_synth:eval'])


def test_the_checkpoint_average_is_the_mean_of_every_leaf():
  states = [dict(w=np.full((2,), 1.0), b=np.float32(0.0)),
            dict(w=np.full((2,), 3.0), b=np.float32(6.0))]
  avg = ood_checkpoints.average_states(states)
  np.testing.assert_array_equal(avg['w'], [2.0, 2.0])
  assert avg['b'] == 3.0


@pytest.mark.parametrize('argv,match', [
    (['--override=no_such_key=1'], 'unknown config key'),
    (['--override=num_ood_samples'], 'KEY=VALUE'),
    (['--config=configs/no_such.py'], "No config 'configs/no_such.py'"),
])
def test_ood_over_checkpoints_refuses_bad_input_in_one_line(tmp_path, argv, match):
  with pytest.raises(cli.UserError, match=match):
    ood_checkpoints.main(['--workdir', str(tmp_path)] + argv)


def test_ood_over_checkpoints_of_a_workdir_without_checkpoints_is_refused(tmp_path):
  with pytest.raises(cli.UserError, match='No checkpoint'):
    ood_checkpoints.main(['--workdir', str(tmp_path)])


@pytest.mark.slow
def test_ood_table_is_written_as_json_markdown_csv_and_a_histogram(first_eval, run_dir):
  results, _ = first_eval
  out = run_dir / 'eval' / results['eval_name']
  assert json.loads((out / 'ood.json').read_text())['table'] == results['ood']['table']
  md = (out / 'ood.md').read_text()
  assert '| shuffled |' in md and 'AUROC' in md
  csv = (out / 'ood.csv').read_text().splitlines()
  assert csv[0] == 'in_distribution,ood_set,n,mean_energy,auroc,auroc_baseline'
  assert {row.split(',')[1] for row in csv[1:]} == {'noise', 'shuffled', 'inverted',
                                                     'constant', 'letters'}
  assert (out / 'ood_hist.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
def test_generator_alone_and_hat_ebm_are_compared_on_the_same_latents(first_eval, run_dir):
  results, _ = first_eval
  m = results['metrics']
  assert set(m) >= {'digits_fd_floor', 'digits_fd_gen', 'digits_fd_hat'}
  # Measured (training seeds 0, 1, 2): floor 4.05; G(z) 415, 446, 534; G(z) + y 251,
  # 182, 279: the Langevin correction y already helps this young generator.
  assert 0 < m['digits_fd_floor'] < m['digits_fd_hat'] < m['digits_fd_gen']
  rows = results['comparison']['rows']
  assert [r['samples'][:8] for r in rows] == ['real tes', 'G(z) (ge', 'G(z) + y']
  assert [r['digits_fd'] for r in rows] == [m['digits_fd_floor'], m['digits_fd_gen'],
                                           m['digits_fd_hat']]
  out = run_dir / 'eval' / results['eval_name']
  table = (out / 'comparison.md').read_text()
  assert 'G(z) + y (Hat EBM)' in table and 'proxy_256' in table
  samples = np.load(out / 'samples.npz')
  assert samples['hat'].shape == samples['gen'].shape == (100, 16, 16, 1)
  assert np.all(np.abs(samples['gen']) <= 2.0 + 1e-6)  # gen_factor 2 * tanh
  assert (out / 'hat.png').exists() and (out / 'gen.png').exists()


@pytest.mark.slow
def test_results_record_everything_needed_to_reproduce_them(first_eval, run_dir):
  results, _ = first_eval
  saved = json.loads((run_dir / 'eval' / results['eval_name'] / 'results.json').read_text())
  assert saved['metrics'] == results['metrics']
  assert saved['eval_name'] == 'eval_digits_raw_step60_seed0'
  model = dict(saved['model'])
  assert model.pop('training_sampler')['mcmc_steps'] == 10  # the run's, for the name
  assert model == dict(source='checkpoint', checkpoint_dir=str(run_dir),
                       checkpoint_step=60, weights='raw', model_mode='synthesis')
  s = saved['sampling']
  assert (s['seed'], s['num_samples'], s['batch_size'], s['num_batches']) == (0, 256, 64, 4)
  assert s['label'] == 'proxy_256'
  assert s['sampler']['mcmc_steps'] == 10 and s['sampler']['mcmc_temp'] == 1e-8
  assert s['sampler']['update_latents'] is False
  assert s['sampler']['init_scale_res'] == 0.0
  assert saved['reference'] == dict(dataset='digits', split='train', size=1497,
                                    floor_split='test', floor_size=300)
  assert saved['ood']['seed'] == 0 and saved['ood']['weights'] == 'raw'
  assert saved['devices'] == jax.device_count()


@pytest.mark.slow
def test_evaluation_writes_only_its_own_folder_and_never_touches_the_run(first_eval,
                                                                          run_dir):
  results, before = first_eval
  after = snapshot(run_dir)
  assert [f for f in after if not f[0].startswith('eval/')] == before
  assert results['eval_name'] in {f[0].split('/')[1] for f in after
                                  if f[0].startswith('eval/')}


@pytest.mark.slow
def test_the_same_command_twice_gives_the_same_numbers(first_eval, run_dir):
  results, _ = first_eval
  again = evaluate.run(eval_digits(), str(run_dir))
  assert again['metrics'] == results['metrics']  # digits_fd and AUROCs, exactly
  assert again['eval_name'] == results['eval_name']


@pytest.mark.slow
def test_another_seed_gives_other_samples_in_another_folder(first_eval, run_dir):
  results, _ = first_eval
  other = evaluate.run(eval_digits(eval_seed=1, ood_datasets=''), str(run_dir))
  assert other['eval_name'] == 'eval_digits_raw_step60_seed1'
  assert other['metrics']['digits_fd_hat'] != results['metrics']['digits_fd_hat']
  assert other['metrics']['digits_fd_floor'] == results['metrics']['digits_fd_floor']


@pytest.mark.slow
def test_ema_weights_and_an_earlier_checkpoint_are_evaluated_when_asked(first_eval,
                                                                        run_dir):
  results, _ = first_eval
  ema = evaluate.run(eval_digits(use_ema=True, num_eval_samples=0), str(run_dir))
  assert ema['model']['weights'] == 'ema' and ema['eval_name'].startswith('eval_digits_ema')
  assert ema['ood']['weights'] == 'ema'
  assert (ema['ood']['in_distribution']['mean_energy']
          != results['ood']['in_distribution']['mean_energy'])
  early = evaluate.run(eval_digits(eval_ckpt_step=30, num_eval_samples=0), str(run_dir))
  assert early['model']['checkpoint_step'] == 30
  assert early['eval_name'] == 'eval_digits_raw_step30_seed0'


@pytest.mark.slow
def test_imported_weights_give_the_numbers_of_the_checkpoint_they_came_from(
    first_eval, run_dir, tmp_path):
  results, _ = first_eval
  raw = checkpointing.restore_raw(run_dir)
  c = load('digits')
  ebm_dir = pretrained.save_pretrained(
      str(tmp_path / 'ebm'), 'ebm_sngan32', dict(ngf=c.ebm_ngf, nch=c.nch),
      {'params': raw['params']['ebm']})
  gen_dir = pretrained.save_pretrained(
      str(tmp_path / 'gen'), 'gen_sngan32', dict(ngf=c.gen_ngf, nz=c.z_sz, nch=c.nch),
      {'params': raw['params']['gen'], 'batch_stats': raw['batch_stats']['gen']})
  out = tmp_path / 'imported_eval'
  imported = evaluate.run(eval_digits(ebm_weights=ebm_dir, gen_weights=gen_dir),
                          str(out))
  assert imported['model']['source'] == 'imported'
  assert imported['model']['weights'] == 'imported'
  assert imported['eval_name'] == 'eval_digits_imported_seed0'
  assert imported['metrics'] == pytest.approx(results['metrics'], rel=1e-5)
  assert (out / 'eval' / 'eval_digits_imported_seed0' / 'results.json').exists()


def run_main_on_two_cpu_devices(*flags):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  return subprocess.run([sys.executable, '-m', 'hat_ebm_jax.main',
                         f'--config={CONFIGS}/digits.py:eval', *flags], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_main_splits_the_batch_over_two_devices_and_gets_the_same_numbers(first_eval,
                                                                          run_dir):
  results, _ = first_eval
  flags = [f'--workdir={run_dir}'] + [f'--config.{k}={v}' for k, v in EVAL.items()]
  p = run_main_on_two_cpu_devices(*flags, '--config.eval_name=two_devices')
  assert p.returncode == 0, p.stderr[-3000:]
  two = json.loads((run_dir / 'eval' / 'two_devices' / 'results.json').read_text())
  assert two['devices'] == 2
  # The same up to float summation order, which T = 1e-8 amplifies in the residual's
  # Langevin steps (measured: digits_fd_gen equal to 1e-9, digits_fd_hat to 3e-5).
  assert two['metrics']['digits_fd_gen'] == pytest.approx(
      results['metrics']['digits_fd_gen'], rel=1e-6)
  assert two['metrics'] == pytest.approx(results['metrics'], rel=1e-3, abs=1e-3)
  # A batch that does not split over the two devices is refused before anything runs.
  p = run_main_on_two_cpu_devices(*flags, '--config.eval_batch_size=63',
                                  '--config.num_eval_samples=252',
                                  '--config.eval_name=odd')
  assert p.returncode != 0
  assert 'eval_batch_size=63 does not divide over 2 devices' in p.stderr
  assert not (run_dir / 'eval' / 'odd').exists()


def test_a_tiny_run_is_evaluated_from_its_checkpoint_and_left_untouched(tmp_path):
  """The quick tier's evaluation (the digits model's tests are slow): a 1-step tiny run,
  16 samples and the noise OOD set give finite numbers and the files of its folder."""
  run = tmp_path / 'run'
  train.run(tiny('synthesis', num_training_steps=1), str(run))
  before = snapshot(run)
  r = evaluate.run(tiny('evaluate', num_eval_samples=16, eval_batch_size=8,
                        ood_datasets='noise', num_ood_samples=50), str(run))
  assert r['model']['model_mode'] == 'synthesis'  # read from the run's config.json
  assert (r['model']['checkpoint_step'], r['model']['weights']) == (1, 'raw')
  assert r['sampling']['sampler']['update_latents'] is False
  assert set(r['metrics']) == {'digits_fd_floor', 'digits_fd_gen', 'digits_fd_hat',
                               'digits_pca_fd_floor', 'digits_pca_fd_gen',
                               'digits_pca_fd_hat', 'ood_auroc_noise'}
  assert all(np.isfinite(v) for v in r['metrics'].values())
  out = run / 'eval' / r['eval_name']
  for name in ('results.json', 'comparison.md', 'ood.md', 'samples.npz', 'hat.png'):
    assert (out / name).stat().st_size > 0, name
  assert json.loads((out / 'results.json').read_text())['metrics'] == r['metrics']
  assert [f for f in snapshot(run) if not f[0].startswith('eval/')] == before


@pytest.mark.slow
def test_other_sampler_settings_go_to_a_folder_named_for_them(first_eval, run_dir):
  results, _ = first_eval
  assert results['eval_name'] == 'eval_digits_raw_step60_seed0'  # the run's sampler
  assert results['settings']['sampler']['mcmc_steps'] == 10
  longer = evaluate.run(eval_digits(mcmc_steps=30, ood_datasets=''), str(run_dir))
  assert longer['eval_name'] == 'eval_digits_raw_step60_seed0_mcmc_steps30'
  assert longer['settings']['sampler']['mcmc_steps'] == 30
  hot = evaluate.run(eval_digits(mcmc_temp=1e-4, epsilon=1e-3, init_scale_res=0.1,
                                 num_eval_samples=64, ood_datasets=''), str(run_dir))
  assert hot['eval_name'].startswith('eval_digits_raw_step60_seed0_sampler')
  assert len(hot['eval_name']) == len('eval_digits_raw_step60_seed0_sampler') + 6


@pytest.mark.slow
def test_an_evaluation_never_replaces_the_numbers_of_other_settings(first_eval, run_dir):
  results, _ = first_eval
  first = run_dir / 'eval' / results['eval_name'] / 'results.json'
  kept = first.read_text()
  fewer = evaluate.run(eval_digits(num_eval_samples=128, ood_datasets=''), str(run_dir))
  assert fewer['eval_name'].startswith(results['eval_name'] + '_')
  assert first.read_text() == kept
  again = evaluate.run(eval_digits(num_eval_samples=128, ood_datasets=''), str(run_dir))
  assert again['eval_name'] == fewer['eval_name']  # the same settings: the same folder


@pytest.mark.slow
def test_longer_chains_are_scored_and_drawn_beside_the_training_length(run_dir):
  r = evaluate.run(eval_digits(chain_length_factors=(1, 2), num_eval_samples=128,
                               ood_datasets='', eval_name='lengths'), str(run_dir))
  m = r['metrics']
  assert {'digits_fd_hat', 'digits_fd_hat_2x', 'digits_pca_fd_hat',
          'digits_pca_fd_hat_2x', 'digits_pca_fd_floor'} <= set(m)
  assert m['digits_fd_hat_2x'] != m['digits_fd_hat']
  out = run_dir / 'eval' / 'lengths'
  assert (out / 'hat_2x.png').stat().st_size > 0
  assert '2x chains' in (out / 'comparison.md').read_text()
  with np.load(out / 'samples.npz') as saved:
    assert saved['hat_2x'].shape == saved['hat'].shape


def test_a_run_of_another_seed_is_evaluated_without_repeating_its_training_flags(
    tmp_path):
  run = tmp_path / 'run'
  train.run(tiny('synthesis', num_training_steps=1, seed=3, batch_size=16,
                 persistent_size=32, ebm_lr_info=[[3e-4, 0]]), str(run))
  r = evaluate.run(tiny('evaluate', num_eval_samples=16, eval_batch_size=8,
                        ood_datasets=''), str(run))  # seed 0, batch 8 in the config
  assert r['model']['checkpoint_step'] == 1
  assert np.isfinite(r['metrics']['digits_fd_hat'])
  with pytest.raises(checkpointing.ConfigMismatchError, match='ebm_ngf'):
    evaluate.run(tiny('evaluate', num_eval_samples=16, eval_batch_size=8,
                      ood_datasets='', ebm_ngf=16), str(run))


@pytest.mark.slow
def test_a_joint_run_is_evaluated_with_moving_latents(tmp_path):
  """Refinement/retrofit: the nets of joint mode, Langevin on z and y; the frozen generator
  comes from the checkpoint, but rebuilding the state needs its weights file."""
  ae, run = tmp_path / 'ae', tmp_path / 'joint'
  train.run(tiny('autoencoder', num_training_steps=1), str(ae))
  joint = dict(gen_type='gen_decoder32', gen_factor=1.0, num_training_steps=1)
  train.run(tiny('joint', gen_weights=str(ae), **joint), str(run))
  c = tiny('evaluate', num_eval_samples=16, eval_batch_size=8, ood_datasets='noise',
           num_ood_samples=50, **joint)
  r = evaluate.run(c, str(run))
  assert r['model']['model_mode'] == 'joint'  # read from the run's config.json
  assert r['sampling']['sampler']['update_latents'] is True
  assert r['sampling']['sampler']['epsilon_latent'] == c.epsilon_latent
  assert {'digits_fd_gen', 'digits_fd_hat', 'ood_auroc_noise'} <= set(r['metrics'])
  ae.rename(tmp_path / 'ae_moved')
  with pytest.raises(FileNotFoundError, match='gen_weights'):
    evaluate.run(with_overrides(c, eval_name='moved'), str(run))
  assert not (run / 'eval' / 'moved').exists()


# ------------------------------------------------------------------ FID and MMD paths


def random_fid_weights(path):
  """An FID Inception .npz with random (He-initialised) weights: FID's plumbing only."""
  rng = np.random.default_rng(0)
  flat = {}
  for k, shape in inception.variable_shapes().items():
    if k.endswith('kernel'):
      fan_in = int(np.prod(shape[:-1]))
      flat[k] = rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)
    elif k.endswith(('scale', 'var')):
      flat[k] = np.ones(shape, np.float32)
    else:
      flat[k] = np.zeros(shape, np.float32)
  inception.save_variables(str(path), flat)
  return str(path)


def fast_frechet_distance(mu1, sigma1, mu2, sigma2):
  """`metrics.frechet_distance` through eigenvalues: `tr sqrtm(s1 s2)` is the sum of the
  square roots of the eigenvalues of `sqrt(s1) s2 sqrt(s1)`. Seconds instead of minutes
  for 2048 x 2048 on a loaded 2-core box (the formula itself is tested in test_metrics)."""
  w, v = np.linalg.eigh(sigma1)
  root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
  eig = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
               - 2 * np.sum(np.sqrt(np.clip(eig, 0, None))))


@pytest.mark.slow
def test_fid_is_labelled_a_proxy_and_its_reference_statistics_are_cached(
    run_dir, tmp_path, monkeypatch):
  monkeypatch.setattr(metrics, 'frechet_distance', fast_frechet_distance)
  weights = random_fid_weights(tmp_path / 'fid_inception.npz')
  c = eval_digits(fid_weights=weights, num_eval_samples=4, eval_batch_size=4,
                  ood_datasets='', eval_name='fid', eval_ckpt_dir=str(run_dir))
  out = tmp_path / 'out'
  r = evaluate.run(c, str(out))
  assert set(r['metrics']) == {'fid_proxy_4_gen', 'fid_proxy_4_hat'}
  assert all(np.isfinite(v) and v > 0 for v in r['metrics'].values())
  assert r['sampling']['label'] == 'proxy_4'
  assert r['comparison']['metric'] == 'fid_proxy_4'
  ref = r['reference']
  assert (ref['dataset'], ref['split'], ref['size'], ref['cached']) == (
      'digits', 'train', 4, False)
  assert ref['fid_weights'] == weights and len(ref['fid_weights_sha']) == 16
  stats = out / 'eval' / 'fid_stats_digits_train_16_4.npz'
  assert str(stats) == ref['file']
  with np.load(stats) as z:
    assert z['mu'].shape == (2048,) and z['sigma'].shape == (2048, 2048)
    assert str(z['fid_weights_sha']) == ref['fid_weights_sha']

  def no_features(x):
    raise AssertionError('the cached reference statistics were not used')

  (mu, _), info = fid.reference_statistics(c, out, no_features, None,
                                           ref['fid_weights_sha'], True)
  assert info['cached'] is True
  with np.load(stats) as z:
    np.testing.assert_array_equal(mu, z['mu'])


def test_given_reference_statistics_are_used_as_they_are(tmp_path):
  path = tmp_path / 'cifar10_train_stats.npz'
  mu, sigma = np.arange(3.0), np.eye(3)
  np.savez(path, mu=mu, sigma=sigma, dataset='cifar10', size=50000)

  def no_features(x):
    raise AssertionError('given statistics must not be recomputed')

  c = eval_digits(fid_stats=str(path))
  (mu2, sigma2), info = fid.reference_statistics(c, tmp_path / 'w', no_features, None,
                                                 'any', True)
  np.testing.assert_array_equal(mu2, mu)
  np.testing.assert_array_equal(sigma2, sigma)
  assert info == dict(dataset='cifar10', size=50000, file=str(path), cached=True)
  assert not (tmp_path / 'w').exists()


def toy_config(**overrides):
  """A small 2D toy Hat EBM (eight Gaussians, MLP nets)."""
  c = config_lib.base_config()
  c.update(dict(
      exp_name='toy', dataset='eight_gaussians', image_size=2, nch=1, batch_size=128,
      num_training_steps=100, ebm_type='ebm_toy', ebm_ngf=32, gen_type='gen_toy',
      gen_ngf=32, z_sz=2, gen_factor=1.0, ebm_lr_info=[[1e-3, 0]], gen_lr_info=[[1e-3, 0]],
      data_epsilon=1e-2, mcmc_steps=10, mcmc_temp=0.1, epsilon=0.1,
      clip_langevin_grad_res=False, persistent_size=1024, gen_loss_factor_coop=1.0,
      log_freq=50, plot_freq=10000, checkpoint_freq=100, num_plot_samples=500,
      num_final_samples=100))
  return with_overrides(c, **overrides)


@pytest.mark.slow
def test_toy_evaluation_reports_mmd_against_the_true_density(tmp_path):
  train.run(toy_config(), str(tmp_path))
  r = evaluate.run(toy_config(mode='evaluate', num_eval_samples=1000, eval_batch_size=500),
                   str(tmp_path))
  m = r['metrics']
  assert set(m) == {'mmd_floor', 'mmd_gen', 'mmd_hat'}
  assert abs(m['mmd_floor']) < 0.05 < m['mmd_gen']  # two true samples vs a young model
  assert r['reference'] == dict(dataset='eight_gaussians', split='train', size=1000,
                                floor_split='test')
  out = tmp_path / 'eval' / r['eval_name']
  assert np.load(out / 'samples.npz')['hat'].shape == (1000, 2)
  assert (out / 'hat.png').exists()


# ------------------------------------------------------------------ bad input


def test_eval_configs_carry_the_sampling_settings_of_spec_section_7():
  want = {  # steps, epsilon, epsilon_latent, T, tau_res, init_scale_res, nets' mode
      'cifar10_synth': (125, 5e-4, None, 1e-3, 0.0, 0.01, 'synthesis'),
      'celeba64_synth': (100, 5e-4, None, 1e-8, 0.0, 0.01, 'synthesis'),
      'imagenet128': (150, 5e-4, None, 1e-8, 0.0, 0.01, 'synthesis'),
      'imagenet128_large': (125, 5e-4, None, 1e-8, 0.0, 0.01, 'synthesis'),
      'cifar10_refine': (350, 1e-4, 5e-3, 1e-3, 8.0, 0.0, 'joint'),
      'celeba64_refine': (125, 1e-4, 5e-3, 1e-6, 0.0, 0.0, 'joint'),
      'cifar10_retrofit': (125, 5e-4, 1e-3, 1e-3, 50.0, 0.01, 'joint'),
  }
  for name, (steps, e, e_z, temp, tau, init, model_mode) in want.items():
    c = load(name, 'eval')
    assert (c.mode, c.eval_model_mode) == ('evaluate', model_mode), name
    assert (c.mcmc_steps, c.epsilon, c.mcmc_temp, c.tau_res, c.init_scale_res) == (
        steps, pytest.approx(e), pytest.approx(temp), tau, init), name
    if e_z is not None:
      assert c.epsilon_latent == pytest.approx(e_z), name
    assert c.clip_langevin_grad_res is False, name  # the original's eval ran unclipped
    assert (c.num_eval_samples, c.eval_batch_size) == (49920, 96), name
    assert evaluate.sample_label(c.num_eval_samples) == 'protocol'
    trained = load(name)  # same nets as the training config
    for key in checkpointing.EXPERIMENT_KEYS:
      if key != 'mode':
        assert c[key] == trained[key], (name, key)
    config_lib.validate(c)
    evaluate.check_config(c, num_devices=8)


def test_sample_counts_that_do_not_split_into_batches_are_refused(tmp_path):
  with pytest.raises(ValueError, match='num_eval_samples=250 .*eval_batch_size=64'):
    evaluate.run(eval_digits(num_eval_samples=250), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_a_batch_that_does_not_split_over_the_devices_is_refused():
  with pytest.raises(ValueError, match='eval_batch_size=96 does not divide over 5 devices'):
    evaluate.check_config(eval_digits(num_eval_samples=960, eval_batch_size=96),
                          num_devices=5)
  evaluate.check_config(eval_digits(num_eval_samples=960, eval_batch_size=96),
                        num_devices=4)


@pytest.mark.parametrize('overrides,match', [
    (dict(ood_datasets='noise,mnist'), "unknown OOD set 'mnist'"),
    (dict(ood_datasets='digits'), "unknown OOD set 'digits'"),
    (dict(eval_model_mode='autoencoder'), 'eval_model_mode'),
    (dict(ebm_weights='/x'), 'gen_weights'),
    (dict(ebm_weights='/x', gen_weights='/y', eval_model_mode=''), 'eval_model_mode'),
    (dict(ebm_weights='/x', gen_weights='/y', use_ema=True), 'use_ema=False'),
    (dict(num_eval_samples=0, ood_datasets=''), 'Nothing to evaluate'),
])
def test_impossible_settings_are_refused_before_anything_is_written(tmp_path, overrides,
                                                                    match):
  with pytest.raises(ValueError, match=match):
    evaluate.run(eval_digits(**overrides), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_missing_fid_weights_say_where_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError, match='fid_weights') as e:
    evaluate.run(load('cifar10_synth', 'eval'), str(tmp_path / 'w'))
  assert 'hat_ebm_jax.fid.convert_weights' in str(e.value)
  assert inception.WEIGHTS_URL in str(e.value)
  with pytest.raises(FileNotFoundError, match='nope.npz') as e:
    evaluate.run(eval_digits(fid_weights=str(tmp_path / 'nope.npz')), str(tmp_path / 'w'))
  assert 'convert_weights' in str(e.value)
  with pytest.raises(FileNotFoundError, match='fid_stats=.*nostats.npz'):
    evaluate.run(eval_digits(fid_weights=str(tmp_path / 'nope.npz'),
                             fid_stats=str(tmp_path / 'nostats.npz')), str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_a_dataset_that_is_not_prepared_is_refused_with_how_to_prepare_it(tmp_path):
  c = with_overrides(load('cifar10_synth', 'eval'), num_eval_samples=0,
                     ood_datasets='noise', data_dir=str(tmp_path / 'tfds'))
  with pytest.raises(DatasetNotFoundError, match='prepare_data'):
    evaluate.run(c, str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def test_a_workdir_without_a_run_is_refused(tmp_path):
  (tmp_path / 'w').mkdir()
  with pytest.raises(FileNotFoundError, match='eval_ckpt_dir'):
    evaluate.run(eval_digits(), str(tmp_path / 'w'))
  assert list((tmp_path / 'w').iterdir()) == []


@pytest.mark.slow
def test_a_checkpoint_of_another_architecture_is_refused_and_nothing_written(
    first_eval, run_dir, tmp_path):
  before = snapshot(run_dir)
  with pytest.raises(checkpointing.ConfigMismatchError, match='ebm_ngf'):
    evaluate.run(eval_digits(ebm_ngf=16), str(run_dir))
  with pytest.raises(checkpointing.ConfigMismatchError, match='mode'):
    evaluate.run(eval_digits(eval_model_mode='joint', gen_weights='/g'), str(run_dir))
  with pytest.raises(ValueError, match=r'eval_ckpt_step=45 .* available steps: \[30, 60\]'):
    evaluate.run(eval_digits(eval_ckpt_step=45), str(run_dir))
  assert snapshot(run_dir) == before
  # Without the run's config.json only the checkpoint itself can tell: still refused.
  bare = tmp_path / 'bare'
  shutil.copytree(run_dir / 'checkpoints', bare / 'checkpoints')
  bare_before = snapshot(bare)
  with pytest.raises(ValueError, match='does not fit'):
    evaluate.run(eval_digits(ebm_ngf=16), str(bare))
  assert snapshot(bare) == bare_before


@pytest.mark.slow
def test_imported_weights_of_another_architecture_are_refused(run_dir, tmp_path):
  raw = checkpointing.restore_raw(run_dir)
  ebm_dir = pretrained.save_pretrained(str(tmp_path / 'ebm'), 'ebm_sngan32',
                                          dict(ngf=32, nch=1),
                                          {'params': raw['params']['ebm']})
  with pytest.raises(ValueError, match='does not fit'):
    evaluate.run(eval_digits(ebm_weights=ebm_dir, gen_weights=ebm_dir, ebm_ngf=16),
                 str(tmp_path / 'w'))
  with pytest.raises(FileNotFoundError, match='nowhere'):
    evaluate.run(eval_digits(ebm_weights=ebm_dir, gen_weights=str(tmp_path / 'nowhere')),
                 str(tmp_path / 'w'))
  assert not (tmp_path / 'w').exists()


def _fake_batches(n_batches, batch=4, bad=None):
  for b in range(n_batches):
    x = np.full((batch, 2, 2, 1), float(b), np.float32)
    if b == bad:
      x[-1, 0, 0, 0] = np.nan
    yield {'hat': jax.numpy.asarray(x), 'gen': jax.numpy.asarray(x - 1)}


def test_collected_samples_with_none_kept_and_fid_features():
  """num_saved_samples=0 with FID: nothing kept (empty arrays of the image shape), every
  sample's features computed."""
  from hat_ebm_jax import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.create_mesh()
  features = lambda x: jax.numpy.reshape(x, (x.shape[0], -1))[:, :3]
  samples, feats = evaluate.collect_samples(_fake_batches(3), mesh, 0, features)
  assert {k: v.shape for k, v in samples.items()} == {'hat': (0, 2, 2, 1),
                                                       'gen': (0, 2, 2, 1)}
  assert feats['hat'].shape == (12, 3) and feats['gen'].shape == (12, 3)
  samples, feats = evaluate.collect_samples(_fake_batches(3), mesh, 6)
  assert samples['hat'].shape == (6, 2, 2, 1) and feats is None
  np.testing.assert_array_equal(samples['hat'][4:, 0, 0, 0], [1.0, 1.0])


def test_a_non_finite_sample_is_caught_even_when_it_is_not_kept():
  from hat_ebm_jax import sharding  # pylint: disable=g-import-not-at-top
  with pytest.raises(FloatingPointError, match=r'batch\(es\) \[2\]'):
    evaluate.collect_samples(_fake_batches(3, bad=2), sharding.create_mesh(), 4)
