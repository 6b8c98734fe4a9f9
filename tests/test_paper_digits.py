"""benchmarks/paper_digits.py: the suite runs every stage on tiny settings, resumes
without redoing what is done, and writes one table in the paper's form with its grids.
(The figures of the real sweep are a benchmark, not a test: nothing here asserts one.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import paper_digits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_suite(root, *flags):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  return subprocess.run([sys.executable, '-m', 'benchmarks.paper_digits', f'--root={root}',
                         *flags], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=1800)


@pytest.mark.slow
def test_the_suite_runs_every_stage_resumes_and_writes_the_table(tmp_path):
  root = tmp_path / 'suite'
  proc = run_suite(root, '--seeds=0', '--jobs=2', '--smoke')
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  for stage in paper_digits.STAGES:
    assert os.path.exists(paper_digits.result_file(str(root), 0, stage)), stage
  md = (root / 'paper_digits.md').read_text()
  for label in ('G(z) + y / floor', 'EMA weights', 'chains 3x as long', 'refinement: change',
                'refinement of the weak generator: change', 'retrofit: change',
                'OOD AUROC by energy: letters', 'OOD AUROC by energy, EMA weights: letters',
                'Gaussian-NLL baseline', '3x / 1x at mcmc_temp'):
    assert label in md, label
  figures = json.loads((root / 'paper_digits.json').read_text())['0']
  for key in ('refine_change', 'refine_weak_change', 'ood_letters', 'ood_ema_letters',
              'long_hat_3x_over_1x'):
    assert np.isfinite(figures[key]), key
  for grid in ('digits_hat', 'refine_gen', 'refine_hat', 'refine_weak_gen', 'refine_weak_hat',
               'retrofit_gen', 'retrofit_hat', 'ood_letters', 'long_hat_3x'):
    assert (root / 'grids' / f'{grid}.png').stat().st_size > 0, grid
  # Everything done: a second call runs nothing and gives the same table.
  again = run_suite(root, '--seeds=0', '--smoke')
  assert again.returncode == 0 and '[paper_digits] seed' not in again.stdout
  assert (root / 'paper_digits.md').read_text() == md


def test_the_table_gives_mean_std_worst_and_every_seed():
  figures = {0: dict(digits_fd_hat=4.0, digits_fd_floor=4.0),
             1: dict(digits_fd_hat=6.0, digits_fd_floor=4.0)}
  md = paper_digits.table(figures)
  assert '| digits_fd, G(z) + y (Hat EBM, raw weights) | 5.00 ± 1.00 | 6.00 | 4.00 | 6.00 |' in md
  assert 'refinement' not in md  # rows without figures are left out


def test_grids_are_upscaled_by_nearest_neighbour():
  images = np.linspace(-1, 1, 4 * 16 * 16).reshape(4, 16, 16, 1).astype(np.float32)
  small = paper_digits.upscaled_grid(images, scale=1)
  big = paper_digits.upscaled_grid(images, scale=4)
  assert big.shape == (small.shape[0] * 4, small.shape[1] * 4, 1)
  assert np.array_equal(big[::4, ::4], small)


def test_bad_seeds_are_refused_in_one_line(tmp_path):
  proc = run_suite(tmp_path, '--seeds=a,b')
  assert proc.returncode != 0 and 'comma-separated integers' in proc.stderr
  assert 'Traceback' not in proc.stderr


def test_unknown_stages_and_a_stage_without_its_input_are_refused_in_one_line(tmp_path):
  proc = run_suite(tmp_path, '--stages=digits,sampling')
  assert proc.returncode != 0 and "unknown stage(s) ['sampling']" in proc.stderr
  proc = run_suite(tmp_path, '--stages=refine')
  assert proc.returncode != 0 and "refine needs 'digits'" in proc.stderr
  assert 'Traceback' not in proc.stderr and not os.path.exists(tmp_path / 'seed0')


def test_the_report_of_some_stages_has_their_rows_only(tmp_path):
  """`--stages=digits`: the table and the grids of the default alone."""
  root = str(tmp_path)
  run = paper_digits.workdir(root, 0, 'digits')
  os.makedirs(os.path.join(run, 'samples'))
  with open(paper_digits.result_file(root, 0, 'digits'), 'w') as f:
    json.dump({'digits_fd_floor': 4.0, 'digits_fd_hat': 6.0, 'digits_fd_hat_3x': 9.0}, f)
  images = np.zeros((64, 16, 16, 1), np.float32)
  np.savez(os.path.join(run, 'samples', 'final.npz'), hat=images, gen=images, hat_3x=images)
  md = paper_digits.report(root, [0], smoke=False)
  assert '| 3x / 1x (bar: <= 1.25) | 1.50 ± 0.00 | 1.50 | 1.50 |' in md
  assert 'refinement' not in md and 'retrofit' not in md and 'OOD' not in md
  assert sorted(os.listdir(os.path.join(root, 'grids'))) == [
      'digits_gen.png', 'digits_hat.png', 'digits_hat_3x.png', 'ood_letters.png']


def test_the_ema_and_long_chain_evaluations_have_rows_of_their_own(tmp_path):
  """`eval_ema` scores OOD with the EMA weights' energy, `eval_long` the chains at
  `LONG_RUN_MCMC_TEMP`; each reads its own folder of the digits run's `eval/`."""
  root = str(tmp_path)
  results = {
      'eval': {'ood': {'table': {'letters': dict(auroc=0.90, auroc_baseline=0.97)}}},
      'eval_ema': {'ood': {'table': {'letters': dict(auroc=0.95, auroc_baseline=0.97)}}},
      'eval_long': {'metrics': {'digits_fd_hat': 8.0, 'digits_fd_hat_3x': 6.0,
                                'digits_fd_hat_10x': 12.0, 'digits_fd_gen': 13.0}}}
  for stage, r in results.items():
    path = paper_digits.result_file(root, 0, stage)
    assert path.startswith(os.path.join(root, 'seed0', 'digits', 'eval'))
    os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
      json.dump(r, f)
  figures = paper_digits.seed_figures(root, 0)
  assert figures['ood_letters'] == 0.90 and figures['ood_ema_letters'] == 0.95
  assert figures['long_digits_fd_hat_10x'] == 12.0 and figures['long_hat_3x_over_1x'] == 0.75
  md = paper_digits.table({0: figures})
  assert '| OOD AUROC by energy, EMA weights: letters | 0.950 ± 0.000 | 0.950 | 0.950 |' in md
  assert '| 3x / 1x at mcmc_temp 3e-8 (bar: <= 1.25) | 0.75 ± 0.00 | 0.75 | 0.75 |' in md
