"""What the training loop watches between its boundaries: the metrics' running means kept
on device (`MeanMetrics`), divergence (`DivergenceError`, named by step and quantity),
SIGTERM (`Preemption`) and the profiler window (`Profile`, `config.profile_steps`).

The loop (`train.train_loop`) reads device values only at its boundaries (log, plot,
evaluation, checkpoint): `MeanMetrics.add` dispatches and transfers nothing;
`check`/`flush` fetch, at a boundary.
"""

import functools
import signal
import threading
import time
from typing import Dict

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import metrics as clu_metrics

from hat_ebm_jax import cli, sharding


class DivergenceError(cli.UserError, RuntimeError):
  """A non-finite loss or energy: the run stops, the last good checkpoint stays latest.

  (A user error for the command line: one line naming the step and what to change.)"""


class Preemption:
  """Turns SIGTERM into a flag the loop reads at each step boundary.

  Only on a single process: with several, `jax.distributed` has its own SIGTERM notifier
  and `manager.reached_preemption(step)` makes all processes stop at the same step (a
  Python handler here would shadow that notifier).
  """

  def __init__(self, install: bool = True):
    self.requested = False
    if install and threading.current_thread() is threading.main_thread():
      self._old = signal.signal(signal.SIGTERM, self._handle)
    else:
      self._old = None

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving at the next step boundary.')
    self.requested = True

  def restore(self):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def first_non_finite(metrics: Dict[str, np.ndarray]) -> str:
  bad = [k for k, v in metrics.items() if k != 'finite' and not np.all(np.isfinite(v))]
  return ', '.join(bad) or 'a loss or energy'


class MeanMetrics:
  """Means of the steps' metrics (but `finite`) since the last `flush`, kept on device,
  and the wall time per step over them (`time_per_batch`): what is written every
  `log_freq` steps.

  `add` folds a step's metrics into `clu.metrics.Average`s with one jitted program (nothing comes
  to the host); `check` and `flush` fetch them, at the loop's boundaries only (log, plot,
  evaluation, checkpoint). Besides the sums it keeps `finite` (every step so far) and the
  first non-finite step's metrics, so a divergence is named by its step and quantity.
  """

  def __init__(self, mesh, start: int):
    rep = sharding.replicated(mesh)
    self._first = sharding.jit(functools.partial(self._fold, None), mesh, out_shardings=rep)
    self._fold_in = sharding.jit(self._fold, mesh, out_shardings=rep, donate_argnums=(0,))
    self.start = start  # the step before the first one of this interval
    self.since = time.time()
    self._acc = None

  @staticmethod
  def _fold(acc, metrics):
    """`acc` (None before the first step) with one step's metrics folded in: a
    `clu.metrics.Average` per metric, merged, and the finiteness record."""
    means = {k: jnp.mean(v).astype(jnp.float32) for k, v in metrics.items()
             if k != 'finite'}
    step_avg = {k: clu_metrics.Average.from_model_output(v) for k, v in means.items()}
    ok = jnp.asarray(metrics['finite'], jnp.bool_)
    if acc is None:
      return dict(avg=step_avg, count=jnp.int32(1), finite=ok,
                  first_bad=jnp.where(ok, 0, 1).astype(jnp.int32), bad=means)
    count = acc['count'] + 1
    now_bad = acc['finite'] & ~ok
    return dict(avg={k: acc['avg'][k].merge(v) for k, v in step_avg.items()}, count=count,
                finite=acc['finite'] & ok,
                first_bad=jnp.where(now_bad, count, acc['first_bad']),
                bad={k: jnp.where(now_bad, v, acc['bad'][k]) for k, v in means.items()})

  def add(self, metrics) -> None:
    """Folds one step's metrics (device arrays) in: one dispatch, no transfer."""
    self._acc = (self._first(metrics) if self._acc is None
                 else self._fold_in(self._acc, metrics))

  def _fetched(self):
    return None if self._acc is None else jax.device_get(self._acc)

  def check(self, step: int, manager) -> None:
    """Raises DivergenceError when a step since the last `flush` was not finite (a
    transfer: at a boundary only)."""
    self._raise_ifdiverged(self._fetched(), step, manager)

  def _raise_ifdiverged(self, acc, step: int, manager) -> None:
    if acc is not None and not bool(acc['finite']):
      raise diverged(self.start + int(acc['first_bad']), self.start + 1, step,
                      acc['bad'], manager)

  def flush(self, step: int, manager) -> Dict[str, float]:
    """The means since the last flush (after `check`), and starts a new interval."""
    acc = self._fetched()
    self._raise_ifdiverged(acc, step, manager)
    now = time.time()
    count = int(acc['count']) if acc is not None else 0
    scalars = {k: float(v.compute()) for k, v in acc['avg'].items()} if count else {}
    scalars['time_per_batch'] = (now - self.since) / max(count, 1)
    self._acc, self.start, self.since = None, step, now
    return scalars


def diverged(step: int, first: int, last: int, metrics: Dict[str, np.ndarray],
              manager) -> DivergenceError:
  """`step`: the first non-finite one, of steps `first..last` (checked at `last`);
  `metrics`: that step's means."""
  return DivergenceError(
      f'Training diverged at step {step}: non-finite {first_non_finite(metrics)} '
      f'({ {k: float(np.mean(v)) for k, v in metrics.items()} }; the first non-finite '
      f'step of steps {first}..{last}, checked at step {last}). The latest '
      f'checkpoint ({manager.latest_step()}) is the last good one; lower the '
      'learning rates or epsilon, or enable clip_ebm_grad, and resume.')


class Profile:
  """`config.profile_steps=N` (N > 0): a trace of steps N..N+profile_num_steps-1 (the
  logs' step numbers) in `workdir/profile` (`jax.profiler`; TensorBoard's profile tab).
  Nothing when the run starts past step N (a resumed run)."""

  def __init__(self, config, workdir):
    self.first = int(config.get('profile_steps', 0) or 0)
    self.last = self.first + int(config.get('profile_num_steps', 5)) - 1
    self.logdir = str(workdir / 'profile')
    self.running = False

  def before(self, step: int) -> None:
    """Called before step `step` is dispatched."""
    if self.first and step == self.first and jax.process_index() == 0:
      logging.info('Profiling steps %d..%d into %s.', self.first, self.last, self.logdir)
      jax.profiler.start_trace(self.logdir)
      self.running = True

  def after(self, step: int, state) -> None:
    """Called after step `step` is dispatched."""
    if self.running and step >= self.last:
      jax.block_until_ready(state)
      self.close()

  def close(self) -> None:
    if self.running:
      self.running = False
      jax.profiler.stop_trace()
