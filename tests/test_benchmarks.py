"""benchmarks/langevin.py: `--smoke` runs end to end and prints well-formed JSON lines."""

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


def test_smoke_reports_every_bench(smoke_lines):
  """Both samplers, the training step and the compile bench each print a line."""
  got = {(l['bench'], l.get('sampler') or l.get('mode')) for l in smoke_lines}
  assert {('sampler', 'synthesis'), ('sampler', 'joint'), ('train_step', 'synthesis'),
          ('compile', 'synthesis')} <= got


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


def test_flops_reads_dict_or_list():
  from benchmarks import langevin as bench  # pylint: disable=g-import-not-at-top
  assert bench._flops({'flops': 3.0}) == 3.0  # pylint: disable=protected-access
  assert bench._flops([{'flops': 3.0}, {'flops': 1.0}]) == 4.0  # pylint: disable=protected-access
  assert bench._flops(None) == 0.0  # pylint: disable=protected-access


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
