"""benchmarks/tf_reference.py: `--smoke` prints well-formed JSON lines, and its TF2 nets and
sampler are the original's (checked against the conformance data in tests/data)."""

import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_smoke_lines(lines):
  """Both samplers under both loops, each with a positive finite time per step."""
  got = {(l['sampler'], l['loop']) for l in lines}
  assert got == {(s, loop) for s in ('synthesis', 'joint') for loop in ('python', 'while')}
  for l in lines:
    assert l['bench'] == 'tf_reference', l
    for k in ('s_per_step', 'cpu_s_per_step'):
      assert isinstance(l[k], float) and math.isfinite(l[k]) and l[k] > 0, (k, l)
    assert l['steps'] == 2 and l['batch_size'] == 2 and l['ngf'] == 8, l
    assert l['tf_version'] and l['finite'], l
    assert isinstance(l['load_avg_1min'], float), l


@pytest.mark.slow  # a benchmark's subprocess smoke run, as in test_benchmarks
def test_smoke_prints_well_formed_lines():
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  t0 = time.time()
  proc = subprocess.run([sys.executable, '-m', 'benchmarks.tf_reference', '--smoke'],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  print(f'\n[tf_reference smoke] {time.time() - t0:.1f}s')
  assert proc.returncode == 0, proc.stderr[-4000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith('{')]
  check_smoke_lines(lines)


def test_nets_and_sampler_match_the_original(ref_dir, manifest):
  """Reference checkpoints (ngf 32) load by name and reproduce the recorded outputs, and
  both samplers reproduce the recorded noise-free Langevin runs."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from benchmarks import tf_reference as ref  # pylint: disable=g-import-not-at-top
  ebm, gen = ref.EBM32(32), ref.Gen32(32, out_factor=2.0)
  ebm(tf.zeros((1, 32, 32, 3)))
  gen(tf.zeros((1, ref.NZ)))
  for net, name in ((ebm, 'ebm_sngan32'), (gen, 'gen_sngan32')):
    assert len(net.variables) == len(manifest[name]['checkpoint_keys']) - 1
    ref.load_checkpoint(net, str(ref_dir / name / 'ckpt'))
    io = np.load(ref_dir / name / 'io.npz')
    np.testing.assert_allclose(net(tf.constant(io['input'])).numpy(), io['output'],
                               rtol=1e-5, atol=1e-5 * np.abs(io['output']).max())
  for case, kind in (('synthesis', 'synthesis'), ('refine', 'joint')):
    settings = manifest['_langevin'][case]['config']
    want = np.load(ref_dir / f'langevin_{case}.npz')
    run = ref.make_sampler(ebm, gen, kind, settings['mcmc_steps'], 'while',
                           settings=settings)
    z, y, gn_z, gn_y, images, _ = [o.numpy() for o in run(
        tf.constant(want['z_init']), tf.constant(want['y_init']))]
    for got, name in ((y, 'y'), (z, 'z')):
      move = want[name] - want[f'{name}_init']
      np.testing.assert_allclose(got - want[f'{name}_init'], move,
                                 atol=1e-3 * max(np.abs(move).max(), 1e-12))
    np.testing.assert_allclose(images, want['images'], atol=1e-5)
    np.testing.assert_allclose([gn_z, gn_y],
                               [want['grad_norm_latent'], want['grad_norm_res']], rtol=1e-5)
