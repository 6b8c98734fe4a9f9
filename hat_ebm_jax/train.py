"""The one training loop: resume, steps, metrics, samples, checkpoints, preemption and the
divergence guard. It knows a mode only through the `modes.base.Mode` protocol.

`run` reads top to bottom: `build` (every check, then the mode, mesh and restored
state), the run's fixed context (`RunContext`), `train_loop`, and `_finish` (the final
samples and metrics).
"""

import dataclasses
import json
import os
import time
from typing import Any, Dict, Optional

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from etils import epath

from hat_ebm_jax import (checkpointing, cli, config_lib, input_pipeline, long_run, modes,
                         monitoring, sharding, visualize)
from hat_ebm_jax.modes import base


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


@dataclasses.dataclass(frozen=True)
class RunContext:
  """What stays fixed while a run trains: every part of the loop reads it."""
  mode: base.Mode
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  state_sh: Any  # the state's shardings (`sharding.state_shardings`)
  batch_sh: jax.sharding.Sharding  # a global data batch's (split along `data`)
  workdir: epath.Path
  manager: Any  # orbax CheckpointManager of `workdir/checkpoints`
  writer: metric_writers.MetricWriter
  is_chief: bool  # process 0: writes summaries and samples
  # The run's jitted programs besides the step (`program`): each traced and compiled
  # once per run, however often it is called (plots, evaluations, final samples).
  programs: Dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False)

  def program(self, key, build):
    """The program named `key`, built by `build()` on first use."""
    if key not in self.programs:
      self.programs[key] = build()
    return self.programs[key]


# The run's named random streams besides the steps' (`state.rng`): functions of
# `config.seed` alone, so a resumed run plots and samples what an uninterrupted one does.

def plot_key(config, step: int) -> jax.Array:
  """Key of the samples plotted at `step`."""
  return jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), step)


def final_samples_key(config) -> jax.Array:
  """Key of the final samples (`samples/final.npz`)."""
  return jax.random.PRNGKey(config.seed + 2)


def final_metrics_rng(config) -> np.random.Generator:
  """Numpy generator of the reference draws of the final metrics (2D toys)."""
  return np.random.default_rng(config.seed + 3)


def run(config, workdir: str) -> Dict[str, Any]:
  """Trains `config.mode` in `workdir` until `config.num_training_steps`.

  Returns the last step's metrics (host numpy) and, when computed, the final metrics;
  after a preemption `{'preempted': True, 'step': ..., **last metrics}`. On several
  processes every process calls it with the same arguments; process 0 alone writes the
  config, summaries and samples, and orbax saves collectively.
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
    is_chief = jax.process_index() == 0
    writer = metric_writers.create_default_writer(str(workdir), just_logging=not is_chief)
    ctx = RunContext(mode=mode, config=config, mesh=mesh, state_sh=state_sh,
                     batch_sh=sharding.batch_sharded(mesh), workdir=workdir,
                     manager=manager, writer=writer, is_chief=is_chief)
    start = int(jax.device_get(state.step))
    if start == 0:
      writer.write_hparams({k: v for k, v in config.to_dict().items()
                            if isinstance(v, (int, float, str, bool))})
    state, step, last, batch, preempted = train_loop(ctx, state, start)
    if preempted:
      result = {'preempted': True, 'step': step, **last}
    else:
      result = {'step': step, **{k: float(np.mean(v)) for k, v in last.items()}}
      if step >= config.num_training_steps:
        result.update(_finish(ctx, state, batch))
    writer.flush()
    return result
  finally:
    close(manager, writer)


def train_loop(ctx: RunContext, state: base.TrainState, start: int):
  """Steps from `start` to `config.num_training_steps`: metrics every `log_freq` steps,
  evaluation every `mode.eval_every`, samples every `plot_freq`, checkpoints every
  `checkpoint_freq` and at the end. Stops after saving at a preemption (SIGTERM, or
  `manager.reached_preemption` on several processes) and raises `monitoring.DivergenceError` at a
  non-finite loss (nothing saved). Returns `(state, step, last metrics, last batch,
  preempted)`.

  Those are the boundaries, and the only places it reads device values: in between,
  steps are dispatched back to back (their metrics summed on device, `monitoring.MeanMetrics`, the
  next batch put on device one step ahead). At each boundary `finite` is read first, so
  a non-finite step is caught before anything is plotted or saved after it (the error
  names that step, of the steps since the last check). `profile_steps` traces a few
  steps (`monitoring.Profile`).
  """
  c, mode, mesh, manager = ctx.config, ctx.mode, ctx.mesh, ctx.manager
  train_step = make_train_step(mode, mesh, ctx.state_sh, ctx.batch_sh)
  data = input_pipeline.create_iterator(
      c, start_step=start, process_index=jax.process_index(),
      process_count=jax.process_count())
  report = periodic_actions.ReportProgress(num_train_steps=c.num_training_steps,
                                           writer=ctx.writer, every_steps=c.log_freq)
  multiprocess = jax.process_count() > 1
  preemption = monitoring.Preemption(install=not multiprocess)
  profile = monitoring.Profile(c, ctx.workdir)
  means = monitoring.MeanMetrics(mesh, start)
  progress = cli.Progress(c.num_training_steps, start)
  last: Dict[str, Any] = {}
  metrics: Dict[str, Any] = {}
  batch, step = None, start
  # One batch ahead: the next step's batch is on device before that step is dispatched
  # (the steps run asynchronously; the host reads and copies the next batch meanwhile).
  upcoming = (sharding.host_to_global(next(data), mesh)
              if step < c.num_training_steps else None)
  try:
    while step < c.num_training_steps:
      batch = upcoming
      profile.before(step + 1)
      t0 = time.time()
      if step == start:  # compiles: lowering reads the constants the step closes over
        with jax.transfer_guard_device_to_host('allow'):
          state, metrics = jax.block_until_ready(train_step(state, batch))
        logging.info('First step (compile + run) took %.1fs.', time.time() - t0)
      else:
        state, metrics = train_step(state, batch)
      step += 1
      upcoming = (sharding.host_to_global(next(data), mesh)
                  if step < c.num_training_steps else None)
      means.add(metrics)
      profile.after(step, state)
      report(step)
      log = step % c.log_freq == 0 or step == c.num_training_steps
      evaluate = bool(mode.eval_every) and step % mode.eval_every == 0
      plot = step % c.plot_freq == 0
      preempted = preemption.requested or (
          multiprocess and manager.reached_preemption(step))
      save = step % c.checkpoint_freq == 0 or step == c.num_training_steps or preempted
      if not (log or evaluate or plot or save):
        continue
      # A boundary: the only place the loop reads device values (finite first).
      with jax.transfer_guard_device_to_host('allow'):
        if log:
          scalars = means.flush(step, manager)
          ctx.writer.write_scalars(step, scalars)
          progress(step, scalars)
        else:
          means.check(step, manager)
        if evaluate:
          ctx.writer.write_scalars(step, _evaluate(ctx, state))
        if plot:
          _plot(ctx, state, step, batch)
        if save:
          checkpointing.save(manager, step, state)
        if step == c.num_training_steps or preempted:
          last = jax.device_get(metrics)
      if preempted:
        logging.warning('Preempted: saved step %d; exiting. Rerun the same command to '
                        'resume.', step)
        return state, step, last, batch, True
  finally:
    profile.close()
    preemption.restore()
  return state, step, last, batch, False


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


def make_train_step(mode: base.Mode, mesh, state_sh, batch_sh):
  """`(state, batch) -> (state, metrics)`: `mode.train_step` as one jitted program (the
  state donated), or, when the mode has a `host_phase`, its host-driven part called on
  concrete arrays followed by its jitted update (same numbers either way).
  """
  out_sh = (state_sh, sharding.replicated(mesh))
  if mode.host_phase is None:
    return sharding.jit(mode.train_step, mesh, in_shardings=(state_sh, batch_sh),
                        out_shardings=out_sh, donate_argnums=(0,))
  host_run, update_step = mode.host_phase
  update = sharding.jit(update_step, mesh, in_shardings=(state_sh, batch_sh, None),
                        out_shardings=out_sh, donate_argnums=(0,))

  def train_step(state, batch):
    with sharding.use_mesh(mesh):
      r = host_run(state, batch)
    return update(state, batch, r)

  return train_step


def _evaluate(ctx: RunContext, state) -> Dict[str, float]:
  """Mean of `mode.eval_step` over `mode.eval_steps` batches of `mode.eval_split`."""
  mode, mesh = ctx.mode, ctx.mesh
  it = input_pipeline.create_iterator(ctx.config, split=mode.eval_split, start_step=0,
                                      process_index=jax.process_index(),
                                      process_count=jax.process_count())
  step_fn = ctx.program('eval_step', lambda: sharding.jit(
      mode.eval_step, mesh, in_shardings=(ctx.state_sh, ctx.batch_sh),
      out_shardings=sharding.replicated(mesh)))
  totals: Dict[str, float] = {}
  for _ in range(mode.eval_steps):
    m = jax.device_get(step_fn(state, sharding.host_to_global(next(it), mesh)))
    for k, v in m.items():
      totals[k] = totals.get(k, 0.0) + float(v)
  return {f'test_{k}': v / mode.eval_steps for k, v in totals.items()}


def _device_samples(ctx: RunContext, state, n: int, key, batch: Optional[jax.Array],
                    **sample_kw) -> Dict[str, jax.Array]:
  """`mode.sample(state, key, n, batch[:n], **sample_kw)` as global arrays.

  `batch` is the last global training batch (sharded); the `n` chains are split over
  `data` when `n` divides over it, else replicated.
  """
  mode, mesh = ctx.mode, ctx.mesh
  out_sh = sharding.sample_sharding(n, mesh)
  key_of = ('sample', n, batch is None, tuple(sorted(sample_kw.items())))
  if batch is None:
    fn = ctx.program(key_of, lambda: sharding.jit(
        lambda s, k: mode.sample(s, k, n, None, **sample_kw), mesh,
        in_shardings=(ctx.state_sh, sharding.replicated(mesh)), out_shardings=out_sh))
    return fn(state, key)
  fn = ctx.program(key_of, lambda: sharding.jit(
      lambda s, k, b: mode.sample(s, k, n, b[:n], **sample_kw), mesh,
      in_shardings=(ctx.state_sh, sharding.replicated(mesh), ctx.batch_sh),
      out_shardings=out_sh))
  return fn(state, key, batch)


def _host(arrays: Dict[str, jax.Array]) -> Dict[str, np.ndarray]:
  return {k: np.asarray(v) for k, v in sharding.to_host(arrays).items()}


def _samples(ctx: RunContext, state, n: int, key,
             batch: Optional[jax.Array]) -> Dict[str, np.ndarray]:
  """`mode.sample(state, key, n, batch[:n])` as host numpy (on every process)."""
  return _host(_device_samples(ctx, state, n, key, batch))


def _final_samples(ctx: RunContext, state, batch) -> Dict[str, np.ndarray]:
  """`num_final_samples` final samples (host numpy), from `final_samples_key`.

  `mode.sample`'s sets (`hat`, `gen` for a Hat EBM). With `final_metrics` on a Hat EBM,
  both weights: the raw ones (`gen`, `hat`) and the EMA (`gen_ema`, `hat_ema`), each
  chain continued to every `chain_length_factors` length (`hat_3x`, `hat_ema_3x`, ...:
  `long_run`).
  """
  c, mode = ctx.config, ctx.mode
  key, n = final_samples_key(c), int(c.num_final_samples)
  if not (c.final_metrics and isinstance(mode, base.HatEBMMode)):
    return _samples(ctx, state, n, key, batch)
  out = {}
  for use_ema, suffix in ((False, ''), (True, '_ema')):
    sets = _device_samples(ctx, state, n, key, batch, use_ema=use_ema, with_chains=True)
    z, y = sets.pop('z'), sets.pop('y')
    sets.update(long_run.continue_chains(mode, state, z, y, jax.random.fold_in(key, 1),
                                         c.chain_length_factors, use_ema, ctx.mesh,
                                         prefix='hat' + suffix))
    out.update({(k + suffix if k in ('gen', 'hat') else k): v
                for k, v in _host(sets).items()})
  return out


def _plot(ctx: RunContext, state, step: int, batch) -> None:
  """`num_plot_samples` samples (and the data batch) as `samples/<name>_<step>.png`."""
  n = ctx.config.num_plot_samples
  out = _samples(ctx, state, n, plot_key(ctx.config, step), batch)
  out.setdefault('data', sharding.to_host(batch)[:n])
  if ctx.is_chief:
    pictures = {name: visualize.save_samples(
        ctx.workdir / 'samples' / f'{name}_{step:06d}.png', x, f'{name} step {step}')
                for name, x in out.items()}
    ctx.writer.write_images(step, {k: v[None] for k, v in pictures.items()})


def _finish(ctx: RunContext, state, batch) -> Dict:
  """Final samples (`samples/final.npz`, PNGs) and, if asked, the final metrics."""
  config = ctx.config
  out = _final_samples(ctx, state, batch)
  logging.info('Parameter checksum (process %d of %d): %.12e', jax.process_index(),
               jax.process_count(), params_checksum(state.params))
  result: Dict[str, Any] = {}
  if ctx.is_chief:
    samples_dir = ctx.workdir / 'samples'
    samples_dir.mkdir(parents=True, exist_ok=True)
    with (samples_dir / 'final.npz').open('wb') as f:
      np.savez(f, **{k: v.astype(np.float32) for k, v in out.items()})
    for name, x in out.items():
      visualize.save_samples(samples_dir / f'final_{name}.png',
                             x[:config.num_plot_samples], f'final {name}')
  if config.final_metrics and 'hat' in out:
    final = final_metrics(config, out)
    result.update(final)
    ctx.writer.write_scalars(int(config.num_training_steps), final)
    if ctx.is_chief:
      (ctx.workdir / 'final_metrics.json').write_text(json.dumps(final, indent=2))
    logging.info('Final metrics: %s', final)
  return result


def params_checksum(params) -> float:
  """Sum of `|p|` over this process's own replica of the (replicated) parameters.

  Logged at the end of training: every process of a multi-host run must log the same.
  """
  return float(sum(np.sum(np.abs(np.asarray(x.addressable_data(0), np.float64)))
                   for x in jax.tree_util.tree_leaves(params)))


def final_metrics(config, samples: Dict[str, np.ndarray]) -> Dict[str, float]:
  """`digits_fd` (floor, G(z), G(z)+y) for digits; MMD of G(z), G(z)+y against fresh
  points of the density (`final_metrics_rng`) for 2D toys (`metrics.quality`); nothing
  where the metric is FID (that is `mode=evaluate`'s). Every other set of `samples`
  (longer chains, EMA weights: `_final_samples`) is scored the same way, and digits also
  by the second judge `digits_pca_fd` (`sample_quality.extra_scores`)."""
  from hat_ebm_jax import metrics, sample_quality  # pylint: disable=g-import-not-at-top
  name = metrics.quality_metric(config.dataset)
  if name == 'fid':
    return {}
  reference = {}
  if name == 'mmd':
    from hat_ebm_jax.datasets import toy2d  # pylint: disable=g-import-not-at-top
    reference['true'] = toy2d.sample(config.dataset, len(samples['hat']),
                                     final_metrics_rng(config))
  pair = {k: samples[k] for k in sample_quality.PAIR}
  out = {f'{name}_{k}': v for k, v in metrics.quality(name, config, pair,
                                                       **reference).items()}
  out.update(sample_quality.extra_scores(name, config, samples, **reference))
  return out
