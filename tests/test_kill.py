"""Fault injection on whole training commands (slow tier): kill -9 at random moments,
saves included, never costs more than the step in flight, and the run that finally
completes equals one that was never interrupted; SIGTERM, divergence and a user error
exit without a traceback from a background thread; two processes recover from the same
damaged checkpoints and agree on the step.

Each round starts `python -m hat_ebm_jax.main` on `configs/tiny.py` with a checkpoint
every step and kills it at one of three kinds of moment, in turn: during start-up
(imports, restore, setting steps aside; a delay drawn from a seeded RNG), during training
(a delay drawn over the time a step and its save take), or while a checkpoint is being
written. Restarts share JAX's persistent compilation cache, so they do not recompile.

By default (and in CI) it kills 6 times, 2 of each kind, and sends 2 SIGTERMs;
`HAT_EBM_TEST_KILLS=20` runs the longer soak. The quick tier's tests/test_faults.py damages
checkpoints in every way a kill can leave them and checks each restore in-process.
"""

import concurrent.futures
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hat_ebm_jax import checkpointing
from tests.conftest import (flip_byte, largest_array_file, max_rel_diff_per_tensor,
                            remove_commit_marker, truncate)

REPO = pathlib.Path(__file__).resolve().parent.parent
KILLS = int(os.environ.get('HAT_EBM_TEST_KILLS', '6'))
SIGTERMS = 2
MOMENTS = ('start', 'training', 'saving')  # kinds of kill moment, each KILLS // 3 times
SEED = 15
OVERRIDES = dict(checkpoint_freq=1, keep_checkpoints=3, log_freq=1, plot_freq=100000,
                 num_final_samples=8, mcmc_steps=2)
BACKGROUND_TRACEBACK = ('Traceback', 'sys.meta_path is None')


def env(cache):
  e = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  e.update(TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1', PYTHONPATH=str(REPO),
           JAX_PLATFORMS='cpu', JAX_COMPILATION_CACHE_DIR=str(cache),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return e


def main_argv(workdir, steps, **overrides):
  flags = dict(OVERRIDES, num_training_steps=steps, **overrides)
  return [sys.executable, '-m', 'hat_ebm_jax.main', f'--config={REPO}/configs/tiny.py',
          f'--workdir={workdir}', *[f'--config.{k}={v}' for k, v in flags.items()]]


STARTED = []  # every command a test started, killed at the end if it still runs


def start(workdir, steps, cache, log, **overrides):
  proc = subprocess.Popen(main_argv(workdir, steps, **overrides), cwd=REPO,
                          env=env(cache), stdout=log.open('w'), stderr=subprocess.STDOUT)
  STARTED.append(proc)
  return proc


@pytest.fixture(autouse=True)
def no_leftover_runs():
  """A failing test leaves no training command running."""
  yield
  while STARTED:
    proc = STARTED.pop()
    if proc.poll() is None:
      proc.kill()
      proc.wait()


def finalized_steps(workdir):
  root = pathlib.Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in root.iterdir()
                if p.name.isdigit() and (p / checkpointing.COMMIT_MARKER).exists()
                ) if root.exists() else []


def last_logged_step(log):
  """The highest step whose metrics the run wrote (log_freq=1: every step it finished)."""
  steps = [int(s) for s in re.findall(r'\] \[(\d+)\] ebm_grad_norm=', log.read_text())]
  return max(steps, default=0)


def saving_now(workdir):
  """A checkpoint is being written: orbax's temporary folder, or a finalized step whose
  checksums process 0 has not written yet."""
  root = pathlib.Path(workdir) / 'checkpoints'
  if not root.exists():
    return False
  for p in root.iterdir():
    if '.orbax-checkpoint-tmp' in p.name:
      return True
    if (p.name.isdigit() and (p / checkpointing.COMMIT_MARKER).exists()
        and not (p / checkpointing.CHECKSUMS).exists()):
      return True
  return False


def resumed_step(log):
  m = re.search(r'Resuming from .* \(step (\d+)\)', log.read_text())
  return int(m.group(1)) if m else 0


def wait_for(log, pattern, proc, timeout=600):
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if log.exists() and re.search(pattern, log.read_text(errors='replace')):
      return True
    time.sleep(0.05)
  return False


def assert_no_background_traceback(text, what):
  for word in BACKGROUND_TRACEBACK:
    assert word not in text, f'{what}: {word!r} in its output:\n{text[-4000:]}'


@pytest.fixture(scope='module')
def cache(tmp_path_factory):
  """JAX's persistent compilation cache of the commands ($HAT_EBM_TEST_JAX_CACHE to keep
  one between test sessions)."""
  return os.environ.get('HAT_EBM_TEST_JAX_CACHE') or tmp_path_factory.mktemp('jax_cache')


def kill_rounds(workdir, logs, rounds, rng, cache):
  """Runs `rounds` (('kill' or 'term', moment)) on `workdir`; returns one record per
  round."""
  records = []
  startup = 20.0  # seconds to the first step with compiled programs cached, measured
  for i, (how, moment) in enumerate(rounds):
    log = logs / f'{workdir.name}_round_{i}.log'
    before = finalized_steps(workdir)
    t0 = time.time()
    proc = start(workdir, 100000, cache, log)
    if moment in ('training', 'saving'):
      assert wait_for(log, r'First step', proc), log.read_text()[-3000:]
      if i:  # (round 0 compiles)
        startup = time.time() - t0
      # Let 1 or 2 more checkpoints finalize, then kill at a random moment of the
      # next step + save (drawn over the time the last one took), or as soon as the
      # next save has begun.
      target = (before[-1] if before else 0) + int(rng.integers(1, 3))
      latest, t_last, interval = -1, time.time(), 1.0
      while proc.poll() is None:
        steps = finalized_steps(workdir)
        if (steps[-1] if steps else 0) != latest:
          if latest >= 0:
            interval = time.time() - t_last
          latest, t_last = (steps[-1] if steps else 0), time.time()
        if latest >= target:
          break
        time.sleep(0.02)
      delay, phase = float(rng.uniform(0.0, interval)), 'training'
      if moment == 'saving':
        deadline = time.time() + 10 * interval + 10
        while proc.poll() is None and time.time() < deadline and not saving_now(workdir):
          time.sleep(0.005)
        if saving_now(workdir):
          delay, phase = 0.0, 'saving'
    else:  # imports, restore, setting steps aside, loading the compiled programs
      delay, phase = float(rng.uniform(0.0, startup)), 'start'
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL if how == 'kill' else signal.SIGTERM)
    rc = proc.wait(timeout=300)
    text = log.read_text(errors='replace')
    if how == 'term':
      assert rc == 0, text[-3000:]
      assert_no_background_traceback(text, f'{log.name} (SIGTERM)')
    # The run resumed from the newest checkpoint the round before left, and lost at
    # most the step it was computing: every step it finished but one is checkpointed.
    if 'Resuming from' in text:
      assert resumed_step(log) == before[-1], (before, text[-3000:])
    after = finalized_steps(workdir)
    latest = after[-1] if after else 0
    records.append(dict(how=how, phase=phase, delay_s=round(delay, 2),
                        latest_before=before[-1] if before else 0, latest_after=latest,
                        lost=max(0, last_logged_step(log) - latest)))
  return records


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_at_most_the_step_in_flight(tmp_path, cache):
  """KILLS rounds of kill -9 (each kind of moment in turn) and SIGTERMS of SIGTERM on
  two workdirs at once (one per core), then a run of each to completion: it equals an
  uninterrupted run of as many steps, to 1e-6 per tensor."""
  logs = tmp_path / 'logs'
  logs.mkdir()
  rounds = ([('kill', MOMENTS[i % len(MOMENTS)]) for i in range(KILLS)]
            + [('term', 'training')] * SIGTERMS)
  np.random.default_rng(SEED).shuffle(rounds)
  lanes = {tmp_path / 'killed_a': rounds[0::2], tmp_path / 'killed_b': rounds[1::2]}
  t0 = time.time()
  with concurrent.futures.ThreadPoolExecutor(len(lanes)) as pool:
    futures = {w: pool.submit(kill_rounds, w, logs, r, np.random.default_rng([SEED, i]),
                              cache) for i, (w, r) in enumerate(lanes.items())}
    records = {w.name: f.result() for w, f in futures.items()}
  t_kills = time.time() - t0
  final_step = max(finalized_steps(w)[-1] for w in lanes) + 2
  runs = {w: start(w, final_step, cache, logs / f'{w.name}_final.log') for w in lanes}
  runs[tmp_path / 'reference'] = start(tmp_path / 'reference', final_step, cache,
                                       logs / 'reference.log')
  for w, proc in runs.items():
    log = logs / (f'{w.name}_final.log' if w in lanes else 'reference.log')
    assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    assert_no_background_traceback(log.read_text(), log.name)
  all_records = [r for rs in records.values() for r in rs]
  print(f'{KILLS} kill -9 and {SIGTERMS} SIGTERM rounds in {t_kills:.0f}s, then reruns '
        f'to step {final_step} ({time.time() - t0 - t_kills:.0f}s):')
  for name, rs in records.items():
    for r in rs:
      print(f'  {name}: {r}')
  assert sum(r['how'] == 'kill' for r in all_records) == KILLS
  if KILLS >= len(MOMENTS):  # every kind of moment was hit, SIGTERM too
    assert {r['phase'] for r in all_records if r['how'] == 'kill'} == set(MOMENTS)
    assert sum(r['how'] == 'term' for r in all_records) == SIGTERMS
  assert max(r['lost'] for r in all_records) <= OVERRIDES['checkpoint_freq']
  b = checkpointing.restore_raw(tmp_path / 'reference')
  for w in lanes:
    a = checkpointing.restore_raw(w)
    assert int(a['step']) == int(b['step']) == final_step
    assert max_rel_diff_per_tensor(a['params'], b['params']) <= 1e-6
    assert max_rel_diff_per_tensor(a['bank'], b['bank']) <= 1e-6


@pytest.fixture(scope='module')
def four_steps(tmp_path_factory, cache):
  """A tiny run of 4 steps, a checkpoint each, all kept (on one process)."""
  workdir = tmp_path_factory.mktemp('four') / 'w'
  log = workdir.parent / 'log'
  assert start(workdir, 4, cache, log, keep_checkpoints=4).wait(timeout=900) == 0, (
      log.read_text()[-4000:])
  return workdir


# Each kind of damage, done to its own step of a copy of `four_steps` (newest first).
DAMAGE = {
    4: ('truncated', lambda w: truncate(largest_array_file(w, 4))),
    3: ('flipped', lambda w: flip_byte(largest_array_file(w, 3))),
    2: ('no_commit_marker', lambda w: remove_commit_marker(w, 2)),
}


@pytest.mark.slow
def test_divergence_and_user_errors_exit_without_a_background_traceback(four_steps,
                                                                        tmp_path, cache):
  workdir = tmp_path / 'w'
  shutil.copytree(four_steps, workdir)
  log = tmp_path / 'diverged.log'
  p = start(workdir, 6, cache, log, data_epsilon='inf')
  assert p.wait(timeout=900) == 2
  text = log.read_text()
  assert 'error: Training diverged at step 5' in text
  assert_no_background_traceback(text, 'divergence')
  assert finalized_steps(workdir) == [1, 2, 3, 4]
  for s in (1, 2, 3, 4):  # nothing restores: one message, every step named
    remove_commit_marker(workdir, s)
  p = start(workdir, 6, cache, log)
  assert p.wait(timeout=900) == 2
  text = log.read_text()
  assert_no_background_traceback(text, 'no checkpoint restores')
  assert re.search(r'error: No checkpoint in .* restores:\n  step 4: no commit marker',
                   text), text[-3000:]


def launch_two(workdir, logs, steps, cache):
  flags = [f'--config={REPO}/configs/tiny.py', f'--workdir={workdir}',
           *[f'--config.{k}={v}' for k, v in
             dict(OVERRIDES, num_training_steps=steps).items()]]
  e = env(cache)
  e['PYTHON'] = sys.executable
  return subprocess.run([str(REPO / 'launch' / 'local_multiprocess.sh'), '-n', '2', '-d',
                         '1', '-l', str(logs), '--', *flags], cwd=REPO, env=e,
                        capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_two_processes_skip_the_same_damaged_checkpoints(four_steps, tmp_path, cache):
  """2 processes x 1 device resume a workdir whose 3 latest steps are damaged, each in
  one way (DAMAGE): both skip each of them and take step 1, process 0 alone moves them
  aside, and both end with the same parameters. (One 2-process run for the three kinds
  of damage; tests/test_faults.py checks each kind alone, in the quick tier.)"""
  workdir, logs = tmp_path / 'w', tmp_path / 'logs'
  shutil.copytree(four_steps, workdir)
  for _, damage in DAMAGE.values():
    damage(workdir)
  p = launch_two(workdir, logs, 3, cache)
  assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
  texts = [(logs / f'process_{i}.log').read_text() for i in range(2)]
  for i, text in enumerate(texts):
    assert re.search(r'Resuming from .* \(step 1\)', text), text[-3000:]
    for step, (kind, _) in DAMAGE.items():
      assert re.search(rf'Checkpoint {step} in .* skipped', text), (kind, text[-3000:])
    assert_no_background_traceback(text, f'process {i}')
  for step in DAMAGE:
    assert f'Moved checkpoint {step} to ' in texts[0]
  assert 'Moved checkpoint' not in texts[1]
  sums = [re.search(r'Parameter checksum \(process \d of 2\): (\S+)', t).group(1)
          for t in texts]
  assert sums[0] == sums[1]
  assert len(list((workdir / 'checkpoints' / 'unreadable').iterdir())) == len(DAMAGE)
  assert finalized_steps(workdir)[-1] == 3
