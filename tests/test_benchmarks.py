"""benchmarks/langevin.py: `--smoke` runs end to end and prints well-formed JSON lines.

The smoke runs compile the benchmarks' programs in subprocesses (minutes on 2 cores), so
they are in the slow tier; their pure parts (FLOP counts, peak FLOPs, the precision
summary and arguments) are checked in the quick tier."""

import json
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_smoke(*flags):
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  t0 = time.time()
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.langevin', '--config=cifar10_synth',
                         '--batch_size=16', '--smoke', *flags],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  print(f'\n[benchmark smoke {" ".join(flags)}] {time.time() - t0:.1f}s')
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]
  assert lines, proc.stdout
  return lines


@pytest.fixture(scope='module')
def smoke_lines():
  return run_smoke()


@pytest.mark.slow
def test_smoke_reports_every_bench(smoke_lines):
  """Both samplers, the training step and the compile bench each print a line."""
  got = {(l['bench'], l.get('sampler') or l.get('mode')) for l in smoke_lines}
  assert {('sampler', 'synthesis'), ('sampler', 'joint'), ('train_step', 'synthesis'),
          ('compile', 'synthesis')} <= got


@pytest.mark.slow
def test_smoke_lines_have_sane_fields(smoke_lines):
  from benchmarks import langevin as bench  # pylint: disable=g-import-not-at-top
  for line in smoke_lines:
    bench.check_line(line)
    assert line['backend'] and line['device_kind'] and line['jax_version']
  samplers = [l for l in smoke_lines if l['bench'] == 'sampler']
  for l in samplers:
    assert l['steps'] == 2 and l['batch_size'] == 4
    assert l['flops_per_step'] > 0 and 0 < l['mfu'] < 1
    assert isinstance(l['layout'], list) and l['layout']
  train = [l for l in smoke_lines if l['bench'] == 'train_step']
  assert train[0]['mcmc_steps'] == 2 and train[0]['finite']


def test_peak_flops_by_device_kind(monkeypatch):
  """MFU's denominator: --peak_flops wins; CPU has a default; accelerators by kind."""
  from benchmarks import langevin as bench  # pylint: disable=g-import-not-at-top
  assert bench.peak_flops('float32', 1e12) == (1e12, '--peak_flops')

  class Dev:
    platform = 'gpu'
    device_kind = 'NVIDIA H200'
  monkeypatch.setattr(bench.jax, 'devices', lambda: [Dev()])
  assert bench.peak_flops('float32', None)[0] == 67e12
  assert bench.peak_flops('bfloat16', None)[0] == 989e12
  Dev.platform, Dev.device_kind = 'tpu', 'TPU v4'
  assert bench.peak_flops('float32', None)[0] == 275e12
  Dev.device_kind = 'Mystery 9000'
  assert bench.peak_flops('float32', None)[0] is None


def test_override_sets_any_config_key_and_refuses_an_unknown_one():
  from benchmarks import langevin as bench  # pylint: disable=g-import-not-at-top
  args = bench.parse_args(['--config=digits', '--override', 'nda_frac=0.25'])
  assert bench.load_config(args).nda_frac == 0.25
  args = bench.parse_args(['--config=digits', '--override', 'nda_fraction=0.25'])
  with pytest.raises(ValueError, match=r"unknown config key\(s\) \['nda_fraction'\]"):
    bench.load_config(args)


def test_flops_reads_dict_or_list():
  from benchmarks import langevin as bench  # pylint: disable=g-import-not-at-top
  assert bench._flops({'flops': 3.0}) == 3.0  # pylint: disable=protected-access
  assert bench._flops([{'flops': 3.0}, {'flops': 1.0}]) == 4.0  # pylint: disable=protected-access
  assert bench._flops(None) == 0.0  # pylint: disable=protected-access


@pytest.mark.slow
def test_model_flops_count_direct_convolutions_under_winograd(smoke_lines):
  """MFU counts the model's FLOPs (direct convolutions); the program's own count, which
  differs where Winograd convs run (fewer multiplies at the paper's widths, more at the
  smoke's 8 channels, where the transforms dominate), is reported beside it."""
  line, = [l for l in run_smoke('--conv_algorithm=winograd', '--samplers=synthesis')
           if l['bench'] == 'sampler']
  default, = [l for l in smoke_lines
              if l['bench'] == 'sampler' and l['sampler'] == 'synthesis']
  assert line['conv_algorithm'] == 'winograd'
  assert line['xla_flops_per_step'] != line['flops_per_step']
  assert line['flops_per_step'] == default['flops_per_step']
  assert default['xla_flops_per_step'] == default['flops_per_step']  # ngf 8: direct


# --- benchmarks/mixed_precision.py -----------------------------------------------------------


def _precision_args(*flags):
  from benchmarks import mixed_precision as mp  # pylint: disable=g-import-not-at-top
  return mp, mp.parse_args(['--workdir=unused', *flags])


def test_precision_summary_compares_means_against_the_first_dtype():
  """`rel_change` is the dtype's mean over seeds against the reference's mean (positive =
  worse), `within` applies `--max_rel_change` to it, and the per-seed changes are kept."""
  mp, args = _precision_args('--seeds=0,1', '--max_rel_change=0.05')
  runs = [dict(dtype='float32', seed=0, digits_fd_hat=6.0),
          dict(dtype='float32', seed=1, digits_fd_hat=4.0),
          dict(dtype='bfloat16', seed=0, digits_fd_hat=5.4),
          dict(dtype='bfloat16', seed=1, digits_fd_hat=4.8)]
  line = mp.summarize(runs, args)
  ref, bf16 = line['dtypes']['float32'], line['dtypes']['bfloat16']
  assert ref['mean'] == 5.0 and 'rel_change' not in ref
  assert bf16['mean'] == pytest.approx(5.1) and bf16['min'] == 4.8 and bf16['max'] == 5.4
  assert bf16['rel_change'] == pytest.approx(0.02) and bf16['within'] is True
  assert bf16['rel_change_per_seed'] == pytest.approx([-0.1, 0.2])
  runs[3]['digits_fd_hat'] = 5.4  # mean 5.4: 8% worse than float32
  assert mp.summarize(runs, args)['dtypes']['bfloat16']['within'] is False
  args.metric = 'mmd_hat'
  with pytest.raises(ValueError, match="'mmd_hat' is not among .*'digits_fd_hat'"):
    mp.summarize(runs, args)


def test_precision_args_need_two_dtypes():
  from benchmarks import mixed_precision as mp  # pylint: disable=g-import-not-at-top
  with pytest.raises(SystemExit):
    mp.parse_args(['--workdir=w', '--dtypes=float32'])


@pytest.mark.slow
def test_precision_smoke_trains_digits_in_both_dtypes(tmp_path):
  """`--smoke`: 2-step digits trainings in float32 and bfloat16 through the entry point,
  one JSON line per run with the run's digits_fd, then the summary line."""
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  t0 = time.time()
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.mixed_precision', '--smoke',
                         f'--workdir={tmp_path}', '--parallel=2'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  print(f'\n[mixed precision smoke] {time.time() - t0:.1f}s')
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]
  runs = [l for l in lines if l['bench'] == 'precision_run']
  summary, = [l for l in lines if l['bench'] == 'precision']
  assert sorted((r['dtype'], r['seed']) for r in runs) == [('bfloat16', 0), ('float32', 0)]
  for r in runs:
    assert r['digits_fd_hat'] > 0 and r['digits_fd_floor'] > 0
    config = json.loads((tmp_path / f'{r["dtype"]}_s0' / 'config.json').read_text())
    assert config['dtype'] == r['dtype'] and config['num_training_steps'] == 2
  assert isinstance(summary['dtypes']['bfloat16']['within'], bool)
