"""The one training loop: resume, steps, metrics, samples, checkpoints, preemption and the
divergence guard. It knows a mode only through `init_state`, `train_step` and `sample`
(and the optional `eval_step`), see `modes/base.py`.
"""

import json
import os
import signal
import threading
import time
from typing import Any, Dict, Optional

import jax
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from hat_ebm_jax import (checkpointing, cli, config_lib, input_pipeline,
                         langevin_programs, modes, sharding, visualize)


class DivergenceError(cli.UserError, RuntimeError):
  """A non-finite loss or energy: the run stops, the last good checkpoint stays latest.

  (A user error for the command line: one line naming the step and what to change.)"""


class _Preemption:
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


def _first_non_finite(metrics: Dict[str, np.ndarray]) -> str:
  bad = [k for k, v in metrics.items() if k != 'finite' and not np.all(np.isfinite(v))]
  return ', '.join(bad) or 'a loss or energy'


def check_workdir(workdir: epath.Path) -> None:
  """Raises a user error unless `workdir` is (or can become) a writable directory.

  Local paths only (a `gs://` bucket is checked by its first write).
  """
  if '://' in str(workdir):
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise cli.user_error(NotADirectoryError(
        f'--workdir={workdir} is a file, not a directory; pass a new or existing '
        'directory.'))
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise cli.user_error(NotADirectoryError(
        f'--workdir={workdir} lies under the file {parent}; pass a directory path.'))
  if not os.access(parent, os.W_OK | os.X_OK):
    raise cli.user_error(PermissionError(
        f'--workdir={workdir} is not writable ({parent} does not allow writing); pass a '
        'directory you can write to.'))


def build(config, workdir: epath.Path):
  """Validates everything, then creates the mode, mesh, manager and (restored) state.

  All checks that can fail (config, dataset, devices, workdir experiment, pretrained
  weights, checkpoint architecture) run before anything is written to `workdir`.
  """
  with cli.user_errors(ValueError):  # every check here is about the config's values
    config_lib.validate(config)
  check_workdir(workdir)
  with cli.user_errors(input_pipeline.DatasetNotFoundError):
    input_pipeline.check_available(config)
  mesh = sharding.create_mesh()
  with cli.user_errors(ValueError):
    sharding.check_batch_divides(config.batch_size, mesh)
  checkpointing.check_workdir_config(workdir, config)
  if config.restore_step is not None and not (workdir / 'checkpoints').exists():
    raise cli.user_error(ValueError(
        f'config.restore_step={config.restore_step}, but {workdir} has no checkpoints; '
        'unset it to start a new run.'))
  mode = modes.create(config)
  state = mode.init_state(jax.random.PRNGKey(config.seed))
  state_sh = sharding.state_shardings(state, mesh)
  state = jax.device_put(state, state_sh)
  manager = None
  if (workdir / 'checkpoints').exists():
    manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
    if manager.all_steps() or config.restore_step is not None:
      try:
        state, manager = _resume(config, workdir, manager, mode, state)
      except BaseException:
        manager.close()
        raise
  return mode, mesh, state, state_sh, manager


def _resume(config, workdir, manager, mode, state):
  """Restores the newest complete checkpoint (or `config.restore_step`).

  Unreadable newer steps are moved to `checkpoints/unreadable/`, and when an older step
  is pinned the newer ones go to `checkpoints/superseded/`: never deleted, and out of
  the way of the steps this run saves and of the `keep_checkpoints` clean-up. Returns
  `(state, manager)`, the manager re-created when steps were moved.
  """
  state, step, skipped = checkpointing.restore(
      manager, state, config.restore_step, upgrades=mode.checkpoint_upgrades)
  logging.info('Resuming from %s (step %d).', workdir, step)
  newer = [s for s in manager.all_steps() if s > step and s not in skipped]
  if skipped or newer:
    checkpointing.set_aside(manager, sorted(skipped), checkpointing.UNREADABLE)
    checkpointing.set_aside(manager, newer, checkpointing.SUPERSEDED)
    manager.close()
    manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
  return state, manager


def run(config, workdir: str) -> Dict[str, Any]:
  """Trains `config.mode` in `workdir` until `config.num_training_steps`.

  Returns the last step's metrics (host numpy) and, when computed, the final metrics.
  On several processes every process calls it with the same arguments; process 0 alone
  writes the config, summaries and samples, and orbax saves collectively.
  """
  sharding.configure_jax()
  workdir = epath.Path(workdir)
  mode, mesh, state, state_sh, manager = build(config, workdir)
  writer = None
  try:
    sharding.sync('hat_ebm_built')  # every process has read the workdir before any writes
    checkpointing.write_workdir_config(workdir, config)
    if manager is None:
      manager = checkpointing.create_manager(workdir, config.keep_checkpoints)
    start = int(jax.device_get(state.step))
    is_chief = jax.process_index() == 0
    writer = metric_writers.create_default_writer(str(workdir), just_logging=not is_chief)
    if start == 0:
      writer.write_hparams({k: v for k, v in config.to_dict().items()
                            if isinstance(v, (int, float, str, bool))})

    batch_sh = sharding.batch_sharded(mesh)
    train_step = make_train_step(mode, mesh, state_sh, batch_sh)
    data = input_pipeline.create_iterator(
        config, start_step=start, process_index=jax.process_index(),
        process_count=jax.process_count())
    report = periodic_actions.ReportProgress(num_train_steps=config.num_training_steps,
                                             writer=writer, every_steps=config.log_freq)
    multiprocess = jax.process_count() > 1
    preemption = _Preemption(install=not multiprocess)
    sums: Dict[str, float] = {}
    count = 0
    last: Dict[str, Any] = {}
    batch = None
    step = start
    t_log = time.time()
    try:
      while step < config.num_training_steps:
        local = next(data)
        batch = sharding.host_to_global(local, mesh)
        t0 = time.time()
        state, metrics = train_step(state, batch)
        metrics = jax.device_get(metrics)
        if step == start:
          logging.info('First step (compile + run) took %.1fs.', time.time() - t0)
        if not bool(metrics['finite']):
          raise DivergenceError(
              f'Training diverged at step {step + 1}: non-finite '
              f'{_first_non_finite(metrics)} '
              f'({ {k: float(np.mean(v)) for k, v in metrics.items()} }). The latest '
              f'checkpoint ({manager.latest_step()}) is the last good one; lower the '
              'learning rates or epsilon, or enable clip_ebm_grad, and resume.')
        step += 1
        last = metrics
        for k, v in metrics.items():
          if k != 'finite':
            sums[k] = sums.get(k, 0.0) + float(np.mean(v))
        count += 1
        report(step)
        if step % config.log_freq == 0 or step == config.num_training_steps:
          now = time.time()
          scalars = {k: v / count for k, v in sums.items()}
          scalars['time_per_batch'] = (now - t_log) / count
          writer.write_scalars(step, scalars)
          sums, count, t_log = {}, 0, now
        if getattr(mode, 'eval_every', 0) and step % mode.eval_every == 0:
          writer.write_scalars(step, _evaluate(mode, config, state, state_sh, mesh))
        if step % config.plot_freq == 0:
          _plot(mode, config, state, state_sh, mesh, step, workdir, writer, batch, is_chief)
        preempted = preemption.requested or (
            multiprocess and manager.reached_preemption(step))
        if (step % config.checkpoint_freq == 0 or step == config.num_training_steps
            or preempted):
          checkpointing.save(manager, step, state)
        if preempted:
          logging.warning('Preempted: saved step %d; exiting. Rerun the same command to '
                          'resume.', step)
          writer.flush()
          return {'preempted': True, 'step': step, **last}
    finally:
      preemption.restore()
    result = {'step': step, **{k: float(np.mean(v)) for k, v in last.items()}}
    if step >= config.num_training_steps:
      result.update(_finish(mode, config, state, state_sh, mesh, workdir, writer, batch,
                            is_chief))
    writer.flush()
    return result
  finally:
    close(manager, writer)


def close(manager, writer) -> None:
  """Waits for pending saves and closes the manager and the writer (on every exit path:
  no background thread may outlive the run and print at interpreter shutdown)."""
  try:
    if manager is not None:
      manager.wait_until_finished()
      manager.close()
  finally:
    if writer is not None:
      try:
        writer.close()
      except OSError as e:  # e.g. a full disk: the error that stopped the run comes first
        logging.warning('Closing the summary writer failed: %s', e)


def make_train_step(mode, mesh, state_sh, batch_sh):
  """`(state, batch) -> (state, metrics)`: `mode.train_step` as one jitted program (the
  state donated), except on CPU for samplers longer than a chunk
  (`langevin_programs.runs_on_host`, e.g. the 250 steps of refinement): inside one
  program those would be a while loop, several times slower on XLA:CPU (or minutes to
  compile unrolled), so the mode's `langevin_step` runs on concrete arrays
  (`concrete=True`) as `langevin_programs`' host loop over compiled chunks and only
  `update_step` is jitted. Same numbers either way.
  """
  out_sh = (state_sh, sharding.replicated(mesh))
  if not (hasattr(mode, 'langevin_step')
          and langevin_programs.runs_on_host(mode.sampler, backend=mode.platform)):
    return sharding.jit(mode.train_step, mesh, in_shardings=(state_sh, batch_sh),
                        out_shardings=out_sh, donate_argnums=(0,))
  update = sharding.jit(mode.update_step, mesh, in_shardings=(state_sh, batch_sh, None),
                        out_shardings=out_sh, donate_argnums=(0,))

  def train_step(state, batch):
    with sharding.use_mesh(mesh):
      r = mode.langevin_step(state, batch, concrete=True)
    return update(state, batch, r)

  return train_step


def _evaluate(mode, config, state, state_sh, mesh) -> Dict[str, float]:
  """Mean of `mode.eval_step` over `mode.eval_steps` batches of `mode.eval_split`."""
  it = input_pipeline.create_iterator(config, split=mode.eval_split, start_step=0,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count())
  step_fn = sharding.jit(mode.eval_step, mesh,
                         in_shardings=(state_sh, sharding.batch_sharded(mesh)),
                         out_shardings=sharding.replicated(mesh))
  totals: Dict[str, float] = {}
  for _ in range(mode.eval_steps):
    m = jax.device_get(step_fn(state, sharding.host_to_global(next(it), mesh)))
    for k, v in m.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  return {f'test_{k}': v / mode.eval_steps for k, v in totals.items()}


def _samples(mode, state, state_sh, mesh, n: int, key,
             batch: Optional[jax.Array]) -> Dict[str, np.ndarray]:
  """`mode.sample(state, key, n, batch[:n])` as host numpy (on every process).

  `batch` is the last global training batch (sharded); the `n` chains are split over
  `data` when `n` divides over it, else replicated.
  """
  out_sh = sharding.sample_sharding(n, mesh)
  if batch is None:
    fn = sharding.jit(lambda s, k: mode.sample(s, k, n, None), mesh,
                      in_shardings=(state_sh, sharding.replicated(mesh)),
                      out_shardings=out_sh)
    out = fn(state, key)
  else:
    fn = sharding.jit(lambda s, k, b: mode.sample(s, k, n, b[:n]), mesh,
                      in_shardings=(state_sh, sharding.replicated(mesh),
                                    sharding.batch_sharded(mesh)),
                      out_shardings=out_sh)
    out = fn(state, key, batch)
  return {k: np.asarray(v) for k, v in sharding.to_host(out).items()}


def _plot(mode, config, state, state_sh, mesh, step, workdir, writer, batch, is_chief):
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), step)
  n = config.num_plot_samples
  out = _samples(mode, state, state_sh, mesh, n, key, batch)
  out.setdefault('data', sharding.to_host(batch)[:n])
  if is_chief:
    pictures = {name: visualize.save_samples(
        workdir / 'samples' / f'{name}_{step:06d}.png', x, f'{name} step {step}')
                for name, x in out.items()}
    writer.write_images(step, {k: v[None] for k, v in pictures.items()})


def _finish(mode, config, state, state_sh, mesh, workdir, writer, batch,
            is_chief) -> Dict:
  """Final samples (`samples/final.npz`, PNGs) and, if asked, the final metrics."""
  key = jax.random.PRNGKey(config.seed + 2)
  out = _samples(mode, state, state_sh, mesh, config.num_final_samples, key, batch)
  logging.info('Parameter checksum (process %d of %d): %.12e', jax.process_index(),
               jax.process_count(), params_checksum(state.params))
  result: Dict[str, Any] = {}
  if is_chief:
    samples_dir = workdir / 'samples'
    samples_dir.mkdir(parents=True, exist_ok=True)
    with (samples_dir / 'final.npz').open('wb') as f:
      np.savez(f, **{k: v.astype(np.float32) for k, v in out.items()})
    for name, x in out.items():
      visualize.save_samples(samples_dir / f'final_{name}.png',
                             x[:config.num_plot_samples], f'final {name}')
  if config.final_metrics and 'hat' in out:
    final = final_metrics(config, out)
    result.update(final)
    writer.write_scalars(int(config.num_training_steps), final)
    if is_chief:
      (workdir / 'final_metrics.json').write_text(json.dumps(final, indent=2))
    logging.info('Final metrics: %s', final)
  return result


def params_checksum(params) -> float:
  """Sum of `|p|` over this process's own replica of the (replicated) parameters.

  Logged at the end of training: every process of a multi-host run must log the same.
  """
  return float(sum(np.sum(np.abs(np.asarray(x.addressable_data(0), np.float64)))
                   for x in jax.tree_util.tree_leaves(params)))


def final_metrics(config, samples: Dict[str, np.ndarray]) -> Dict[str, float]:
  """`digits_fd` (floor, G(z), G(z)+y) for digits; MMD of G(z), G(z)+y for 2D toys
  (`metrics.quality`); nothing where the metric is FID (that is `mode=evaluate`'s)."""
  from hat_ebm_jax import metrics  # pylint: disable=g-import-not-at-top
  name = metrics.quality_metric(config.dataset)
  if name == 'fid':
    return {}
  return {f'{name}_{k}': v for k, v in metrics.quality(name, config, samples).items()}
