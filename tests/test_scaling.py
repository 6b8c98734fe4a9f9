"""Scale-out on CPU: training on 8 devices equals training on 1, two processes x two
devices (`launch/local_multiprocess.sh`) preempt, resume and agree with one process, and a
layout that cannot work fails at start.

XLA_FLAGS must be set before jax is imported, so the 1- and 8-device runs are
subprocesses (started together: they use both cores of a CI machine), each running every
mode on `configs/tiny.py` (batch 8) with `train.run`.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from etils import epath

from hat_ebm_jax import checkpointing, models, pretrained
from hat_ebm_jax.datasets import digits_tfds
from tests.conftest import max_rel_diff, max_rel_diff_per_tensor, tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(REPO, 'launch')
STEPS = 5  # training steps per mode
# Parameters of 8 vs 1 device(s) (float summation order differs): max |a - b| / max |b|
# over each network, and over each tensor. Per tensor is looser: a bias's gradient is a
# sum over batch and pixels with much cancellation, so the summation order changes it the
# most, and a bias that starts at zero has moved only a few steps of lr = 1e-4 (values
# ~3e-5 after 5 steps): 4e-9 apart is 1.2e-4 of that (2 processes x 2 devices, measured).
# A bias that trained wrongly would be off by ~1 on this scale.
TOL = 1e-5
TOL_TENSOR = 1e-3
# Fewer/cheaper compiles: no plots, 8 final samples, 2 Langevin steps.
OVERRIDES = dict(num_training_steps=STEPS, plot_freq=1000, log_freq=1, checkpoint_freq=1,
                 keep_checkpoints=STEPS, num_final_samples=8, num_plot_samples=8,
                 mcmc_steps=2)
MODES = ('synthesis', 'autoencoder', 'joint')

# Runs in a subprocess with XLA_FLAGS already set: every mode through train.run, then a
# check that the Langevin chains of `sample` are split over the devices, and the errors
# of a batch that does not divide over them.
WORKER = r'''
import json, sys, time
import jax
from hat_ebm_jax import modes, sharding, train
from tests.conftest import tiny
out, gen_weights, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
report = {'devices': jax.device_count()}
for mode in ('synthesis', 'autoencoder', 'joint'):
  weights = {'gen_weights': gen_weights} if mode == 'joint' else {}
  train.run(tiny(mode, **overrides, **weights), f'{out}/{mode}')
  report[f'cpu_s_{mode}'] = round(time.process_time())
if jax.device_count() > 1:
  # The chains of a sampler call, compiled without output shardings: XLA must keep them
  # split over `data` (the constraint in init_chains), never one full batch per device.
  c = tiny('synthesis', **overrides)
  mode = modes.create(c)
  mesh = sharding.create_mesh()
  state = mode.init_state(jax.random.PRNGKey(0))
  state_sh = sharding.state_shardings(state, mesh)
  state = jax.device_put(state, state_sh)
  fn = sharding.jit(lambda s, k: mode.sample(s, k, 8), mesh,
                    in_shardings=(state_sh, sharding.replicated(mesh)))
  compiled = fn.lower(state, jax.random.PRNGKey(1)).compile()
  report['sample_out_specs'] = {k: list(v.spec) for k, v in compiled.output_shardings.items()}
  convs = [int(b) for b in __import__('re').findall(
      r'= f32\[(\d+),16,16,\d+\][^ ]* convolution\(', compiled.as_text())]
  report['sample_conv_batches'] = sorted(set(convs))
  report['bank_spec'] = list(state.bank['x'].sharding.spec)
  # A batch that does not divide over the devices is refused before anything is written.
  try:
    train.run(tiny('synthesis', **dict(overrides, batch_size=12, persistent_size=48)),
              f'{out}/bad_batch')
  except ValueError as e:
    report['bad_batch_error'] = str(e)
report['cpu_s'] = round(time.process_time())
print('REPORT ' + json.dumps(report))
'''


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1', PYTHONPATH=REPO,
             JAX_PLATFORMS='cpu', **extra)
  return env


def _devices_env(n):
  return _env(XLA_FLAGS=f'--xla_force_host_platform_device_count={n}')


def check_params_match(a, b, what):
  """Each network within TOL, each tensor within TOL_TENSOR; returns the differences."""
  per_net = {net: max_rel_diff(a[net], b[net]) for net in b}
  per_tensor = max_rel_diff_per_tensor(a, b)
  print(f'{what}: max relative parameter difference per network '
        f'{ {k: f"{v:.1e}" for k, v in per_net.items()} }, per tensor {per_tensor:.1e}')
  assert max(per_net.values()) <= TOL, per_net
  assert per_tensor <= TOL_TENSOR
  return per_net, per_tensor


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Every mode trained STEPS steps on 1 and on 8 devices (two parallel subprocesses)."""
  root = tmp_path_factory.mktemp('scaling')
  digits_tfds.prepare()  # once, before several processes read it
  c = tiny('joint', **OVERRIDES)
  gen = models.make_generator(c)
  gen_weights = str(root / 'gen')
  pretrained.save_pretrained(gen_weights, c.gen_type, dict(
      ngf=c.gen_ngf, nch=c.nch, nz=c.z_sz, out_factor=c.gen_factor, bottom=c.gen_bottom),
                             models.init_variables(gen, jax.random.PRNGKey(7)))
  procs = {}
  t0 = time.time()
  for n in (1, 8):
    procs[n] = subprocess.Popen(
        [sys.executable, '-c', WORKER, str(root / f'dev{n}'), gen_weights,
         json.dumps(OVERRIDES)], cwd=REPO,
        env=_devices_env(n), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  reports = {}
  for n, p in procs.items():
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, f'{n}-device run failed:\n{out[-6000:]}'
    reports[n] = json.loads(re.search(r'^REPORT (.*)$', out, re.M).group(1))
  print(f'1- and 8-device runs of {MODES}: {time.time() - t0:.0f}s; reports {reports}')
  return {'root': root, 'reports': reports}


@pytest.mark.slow
@pytest.mark.parametrize('mode', MODES)
def test_eight_devices_train_like_one(runs, mode):
  assert runs['reports'][8]['devices'] == 8 and runs['reports'][1]['devices'] == 1
  one = checkpointing.restore_raw(runs['root'] / 'dev1' / mode)
  eight = checkpointing.restore_raw(runs['root'] / 'dev8' / mode)
  assert int(one['step']) == int(eight['step']) == STEPS
  check_params_match(eight['params'], one['params'], f'{mode}, 8 vs 1 device')
  if mode == 'synthesis':  # the global bank too (indices drawn over all of it)
    assert max_rel_diff(eight['bank'], one['bank']) <= TOL
  final1 = np.load(runs['root'] / 'dev1' / mode / 'samples' / 'final.npz')
  final8 = np.load(runs['root'] / 'dev8' / mode / 'samples' / 'final.npz')
  assert set(final1.files) == set(final8.files)
  for k in final1.files:
    np.testing.assert_allclose(final8[k], final1[k], atol=1e-3, err_msg=k)


@pytest.mark.slow
def test_langevin_chains_and_bank_are_split_over_devices(runs):
  report = runs['reports'][8]
  assert report['sample_out_specs'] == {'hat': ['data'], 'gen': ['data']}
  assert report['sample_conv_batches'] == [1], report['sample_conv_batches']
  assert report['bank_spec'] == ['data']


@pytest.mark.slow
def test_batch_that_does_not_divide_over_devices_is_refused_at_start(runs):
  msg = runs['reports'][8]['bad_batch_error']
  assert 'batch_size=12' in msg and '8 devices' in msg and 'multiple of 8' in msg
  assert not (runs['root'] / 'dev8' / 'bad_batch').exists()


def _launch(workdir, logs, *flags, steps, env):
  cmd = [os.path.join(LAUNCH, 'local_multiprocess.sh'), '-n', '2', '-d', '2', '-l',
         str(logs), '--', f'--config={REPO}/configs/tiny.py', f'--workdir={workdir}',
         *[f'--config.{k}={v}' for k, v in dict(OVERRIDES, num_training_steps=steps).items()],
         *flags]
  return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for(path, pattern, timeout):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if path.exists() and re.search(pattern, path.read_text(errors='replace')):
      return
    time.sleep(0.5)
  raise AssertionError(f'{pattern!r} not in {path} after {timeout}s')


@pytest.mark.slow
def test_two_processes_preempt_resume_and_match_one_process(runs, tmp_path):
  """2 processes x 2 devices: SIGTERM to process 1 alone stops both at the same step with
  a checkpoint; the same command resumes to STEPS; both processes end with the same
  parameters, equal to the 1-device run's."""
  workdir, logs = tmp_path / 'w', tmp_path / 'logs'
  env = _env(PYTHON=sys.executable)
  t0 = time.time()
  first = _launch(workdir, logs, steps=100000, env=env)
  pids = {}
  for line in first.stdout:  # "process <i> pid <pid> log ..."
    m = re.match(r'process (\d) pid (\d+)', line)
    if m:
      pids[int(m.group(1))] = int(m.group(2))
    if len(pids) == 2:
      break
  try:
    _wait_for(logs / 'process_1.log', r'First step', timeout=600)
  except AssertionError:
    first.kill()
    raise
  os.kill(pids[1], signal.SIGTERM)  # a preemption notice reaching one host only
  out, _ = first.communicate(timeout=300)
  assert first.returncode == 0, out[-4000:]
  saved = [re.search(r'Preempted: saved step (\d+)', (logs / f'process_{i}.log').read_text())
           for i in range(2)]
  assert all(saved), out[-4000:]
  step = int(saved[0].group(1))
  assert int(saved[1].group(1)) == step  # same step on both hosts
  assert 1 <= step < STEPS, f'preempted at {step}; STEPS={STEPS} is too small'
  assert checkpointing.create_manager(workdir, STEPS).latest_step() == step
  t1 = time.time()

  second = _launch(workdir, logs, steps=STEPS, env=env)
  out, _ = second.communicate(timeout=600)
  assert second.returncode == 0, out[-4000:]
  sums = [re.search(r'Parameter checksum \(process (\d) of 2\): (\S+)',
                    (logs / f'process_{i}.log').read_text()) for i in range(2)]
  assert all(sums), out[-4000:]
  assert {int(s.group(1)) for s in sums} == {0, 1}
  assert sums[0].group(2) == sums[1].group(2)  # every host holds the same parameters
  assert 'Resuming from' in (logs / 'process_0.log').read_text()
  resumed = checkpointing.restore_raw(workdir)
  one = checkpointing.restore_raw(runs['root'] / 'dev1' / 'synthesis')
  assert int(resumed['step']) == STEPS
  print(f'2 processes x 2 devices, preempted at step {step} ({t1 - t0:.0f}s) and '
        f'resumed to {STEPS} ({time.time() - t1:.0f}s): checksums {sums[0].group(2)} '
        f'{sums[1].group(2)}')
  check_params_match(resumed['params'], one['params'], '2 processes x 2 devices vs 1')
  assert max_rel_diff(resumed['bank'], one['bank']) <= TOL
  # Only process 0 wrote summaries and samples.
  events = [p.name for p in workdir.iterdir() if p.name.startswith('events.out')]
  assert len(events) == 2, events  # one per run
  assert (workdir / 'samples' / 'final.npz').exists()


def test_process_id_outside_the_process_count_is_refused_at_start(tmp_path):
  p = subprocess.run(
      [sys.executable, '-m', 'hat_ebm_jax.main', f'--config={REPO}/configs/tiny.py',
       f'--workdir={tmp_path / "w"}', '--coordinator_address=127.0.0.1:1',
       '--num_processes=2', '--process_id=5'], cwd=REPO, env=_env(), capture_output=True,
      text=True, timeout=120)
  assert p.returncode != 0
  assert '--process_id=5 is outside [0, 2)' in p.stderr
  assert not (tmp_path / 'w').exists()
  p = subprocess.run(
      [sys.executable, '-m', 'hat_ebm_jax.main', f'--config={REPO}/configs/tiny.py',
       f'--workdir={tmp_path / "w"}', '--num_processes=2'], cwd=REPO, env=_env(),
      capture_output=True, text=True, timeout=120)
  assert p.returncode != 0 and '--coordinator_address' in p.stderr


@pytest.mark.parametrize('argv,expected', [
    (['local_multiprocess.sh', '--dry-run', '-n', '2', '-d', '2', '--'],
     ['--process_id=0', '--process_id=1', '--num_processes=2',
      'xla_force_host_platform_device_count=2', 'JAX_CPU_COLLECTIVES_IMPLEMENTATION=gloo',
      '--coordinator_address=127.0.0.1:']),
    (['tpu_pod.sh', '--dry-run', '-t', 'v4-32', '--spot', '--'],
     ['tpu-vm create', '--accelerator-type=v4-32', '--spot', '--worker=all',
      '--multihost', 'tpu-vm delete']),
    (['slurm_gpu.sbatch', '--dry-run'], ['srun', '-m hat_ebm_jax.main']),
])
def test_launch_scripts_print_their_commands_with_dry_run(argv, expected):
  p = subprocess.run(['bash', os.path.join(LAUNCH, argv[0]), *argv[1:],
                      '--config=configs/tiny.py', '--workdir=gs://bucket/w'],
                     cwd=REPO, capture_output=True, text=True, timeout=60)
  assert p.returncode == 0, p.stderr
  out = p.stdout.replace('\\', '')
  for word in expected + ['--config=configs/tiny.py', '--workdir=gs://bucket/w']:
    assert word in out, (word, out)


def test_cloud_paths_are_not_made_local():
  assert str(checkpointing.absolute_path(epath.Path('gs://bucket/run/checkpoints'))) == (
      'gs://bucket/run/checkpoints')
  assert str(checkpointing.absolute_path(epath.Path('rel/dir'))) == os.path.abspath('rel/dir')
