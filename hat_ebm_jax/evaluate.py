"""Evaluation (`config.mode = 'evaluate'`), docs/algorithm.md §9: samples with the
paper's evaluation settings, their quality (FID, `digits_fd` or MMD) for the generator
alone `G(z)` and the Hat EBM `G(z) + y` of the same latents (and the same chains run on
to `chain_length_factors` x `mcmc_steps`), and OOD detection with the energy `H(x)`.

    python -m hat_ebm_jax.main --config=configs/cifar10_synth.py:eval --workdir=RUN \
        --config.fid_weights=fid_inception.npz

What is evaluated (`load_model`):
  * a training run: the latest (or `eval_ckpt_step`) checkpoint of `eval_ckpt_dir`
    (default: `--workdir`), raw or EMA weights (`use_ema`). The nets are those of the
    run's training mode (`eval_model_mode`, or the `mode` in the run's `config.json`),
    built by `modes.create` and restored into `init_state`'s structure; a config whose
    architecture differs from the run's is refused before anything is read;
  * imported weights: `ebm_weights`, `gen_weights` (`pretrained.load_pretrained`).

What is computed (`run`):
  * `num_eval_samples` chains in global batches of `eval_batch_size` split over the
    `data` axis of all devices; batch `b` starts from `fold_in(PRNGKey(eval_seed), b)`,
    so the numbers depend only on the seed, not on the device count;
  * the quality metric (`metrics.quality`): FID for tfds image datasets (and for digits
    when `fid_weights` is given), against the statistics of `num_eval_samples` images of
    `config.split` (`fid.reference_statistics`: cached in
    `WORKDIR/eval/fid_stats_<dataset>_<split>_<size>_<n>.npz`, or `fid_stats`);
    `digits_fd` (floor, `G(z)`, `G(z) + y`) for digits; squared MMD against the true
    density for 2D toys. 49,920 samples (520 x 96) is the paper's protocol, named `fid`;
    fewer is a proxy, named `fid_proxy_<n>`;
  * OOD detection (`ood.py`): AUROCs of the energy beside a baseline's per OOD set.

Outputs, in `WORKDIR/eval/<eval_name>/` (`eval_settings`: never over another
evaluation's): `results.json` (the numbers with everything they depend on),
`comparison.md`, `samples.npz`, grids, `ood.json`, `ood.md`, `ood.csv`, `ood_hist.png`
and the evaluation's `config.json`. Every check that can fail runs first.
"""

import json
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

import jax
import numpy as np
from absl import logging
from etils import epath

from hat_ebm_jax import (checkpointing, cli, config_lib, eval_settings, input_pipeline,
                         long_run, metrics, modes, ood, pretrained, sample_quality, sharding,
                         visualize)
from hat_ebm_jax.datasets import digits
from hat_ebm_jax.fid import stats as fid_stats
from hat_ebm_jax.modes import base

PROTOCOL_SAMPLES = 49920  # docs/algorithm.md §9: 520 batches of 96
EVAL_MODEL_MODES = ('synthesis', 'joint')
# The comparison table's first row, for the metrics that have a floor.
FLOOR_ROWS = {'digits_fd': f'real test digits (floor, n={digits.NUM_TEST})',
              'mmd': 'true points, another split (floor)'}
SAMPLE_ROWS = {'gen': 'G(z) (generator alone)', 'hat': 'G(z) + y (Hat EBM)'}


# ------------------------------------------------------------------ config and checks


def quality_metric(config) -> str:
  """'fid', 'digits_fd' or 'mmd': what `num_eval_samples` samples are scored with."""
  return metrics.quality_metric(config.dataset, config.fid_weights)


def sample_label(n: int, metric: str = 'fid') -> str:
  """'protocol' for FID on docs/algorithm.md §9's 49,920 samples, else 'proxy_<n>' (every offline
  metric is a proxy)."""
  return 'protocol' if metric == 'fid' and n == PROTOCOL_SAMPLES else f'proxy_{n}'


def fid_name(n: int) -> str:
  """The FID's name in the results: `fid` (protocol) or `fid_proxy_<n>`."""
  return 'fid' if n == PROTOCOL_SAMPLES else f'fid_{sample_label(n)}'


def check_config(config, num_devices: int, process_count: int = 1) -> None:
  """Raises ValueError naming the key and the fix for an evaluation setting that cannot
  work on `num_devices` devices in `process_count` processes. Reads nothing from disk."""
  n, b = int(config.num_eval_samples), int(config.eval_batch_size)
  if b <= 0:
    raise ValueError(f'config.eval_batch_size must be positive; got {b}.')
  if n < 0 or n == 1:
    raise ValueError(f'config.num_eval_samples must be 0 (no sampling) or >= 2; got {n}.')
  if n % b:
    lo = max(b, n // b * b)
    raise ValueError(
        f'config.num_eval_samples={n} is not a whole number of batches of '
        f'config.eval_batch_size={b}: set --config.num_eval_samples={lo} or '
        f'{lo + b}, or an eval_batch_size that divides it (the protocol is 520 x 96).')
  if b % num_devices or b % process_count:
    good = max(num_devices, b // num_devices * num_devices)
    raise ValueError(
        f'config.eval_batch_size={b} does not divide over {num_devices} devices in '
        f'{process_count} process(es): use a multiple of {num_devices} (e.g. '
        f'--config.eval_batch_size={good}).')
  if config.eval_model_mode not in ('',) + EVAL_MODEL_MODES:
    raise ValueError(f'config.eval_model_mode={config.eval_model_mode!r}: choose '
                     f'{" or ".join(EVAL_MODEL_MODES)} (or \'\' to read it from the '
                     'run\'s config.json).')
  if config.ebm_weights:
    if not config.gen_weights:
      raise ValueError('config.ebm_weights is set: also set config.gen_weights to the '
                       'generator (TF checkpoint prefix or hat_ebm_jax.pretrained output).')
    if not config.eval_model_mode:
      raise ValueError('Imported weights (config.ebm_weights) need '
                       'config.eval_model_mode (synthesis or joint): there is no run '
                       'config.json to read it from.')
    if config.use_ema:
      raise ValueError('config.use_ema=True, but imported weights (config.ebm_weights) '
                       'have no EMA: set --config.use_ema=False.')
  names = ood.check_config(config)
  if n == 0 and not names:
    raise ValueError('Nothing to evaluate: config.num_eval_samples is 0 and '
                     'config.ood_datasets is empty.')
  if int(config.num_saved_samples) < -1:
    raise ValueError('config.num_saved_samples must be -1 (all) or >= 0; got '
                     f'{config.num_saved_samples}.')


def _saved_run_config(ckpt_dir: epath.Path) -> Optional[Dict]:
  path = ckpt_dir / 'config.json'
  return json.loads(path.read_text()) if path.exists() else None


def training_config(config, saved: Optional[Dict]):
  """A copy of the evaluation config with `mode` set to the evaluated nets' training mode
  (`eval_model_mode`, else the run's `config.json`) and the training-only settings
  (`eval_settings.RUN_KEYS`: seed, batch, bank, schedules) read from its `config.json`,
  for `modes.create`. The architecture keys are not read: a config whose nets differ
  from the run's is refused (`checkpointing.check_workdir_config`)."""
  mode = config.eval_model_mode or (saved or {}).get('mode', '')
  if mode not in EVAL_MODEL_MODES:
    raise ValueError(
        f'Cannot tell which nets to build: config.eval_model_mode is '
        f'{config.eval_model_mode!r} and the run\'s config.json says mode={mode!r}. Set '
        f'--config.eval_model_mode to {" or ".join(EVAL_MODEL_MODES)} (an autoencoder '
        'run has no EBM to evaluate).')
  train_cfg = config.copy_and_resolve_references()
  with train_cfg.unlocked():
    train_cfg.mode = mode
    for key in eval_settings.RUN_KEYS:  # how the run was trained: never repeated
      if saved and key in saved and key in train_cfg:
        train_cfg[key] = saved[key]
    if mode == 'joint' and not train_cfg.gen_weights and saved:
      train_cfg.gen_weights = saved.get('gen_weights', '')
  return train_cfg


# ------------------------------------------------------------------ model


def _abstract_state(mode, mesh) -> Any:
  """`ShapeDtypeStruct`s of `mode.init_state` (nothing computed) placed on `mesh`:
  replicated, except the synthesis bank, split along `data` when its size divides over
  this mesh (which may differ from the training run's)."""
  abstract = jax.eval_shape(mode.init_state, jax.random.PRNGKey(0))

  def place(field):
    def struct(a):
      s = (sharding.sample_sharding(a.shape[0], mesh) if field == 'bank' and a.ndim
           else sharding.replicated(mesh))
      return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
    return jax.tree_util.tree_map(struct, getattr(abstract, field))

  return abstract.replace(**{f: place(f) for f in abstract.__dataclass_fields__})


def _restore_run(mode, train_cfg, ckpt_dir: epath.Path, step: Optional[int], mesh):
  """Restores a run checkpoint into `mode`'s state structure. Returns (state, step)."""
  manager = checkpointing.read_only_manager(ckpt_dir)
  try:
    return _restore_newest(manager, mode, train_cfg, ckpt_dir, step, mesh)
  finally:
    manager.close()


def _restore_newest(manager, mode, train_cfg, ckpt_dir, step, mesh):
  steps = list(manager.all_steps())
  if not steps:
    raise cli.user_error(FileNotFoundError(
        f'No checkpoint in {ckpt_dir}/checkpoints. Train first, point '
        '--config.eval_ckpt_dir at a training workdir, or evaluate imported weights with '
        '--config.ebm_weights and --config.gen_weights.'))
  if step is not None and int(step) not in steps:
    raise cli.user_error(ValueError(
        f'config.eval_ckpt_step={step} is not in {ckpt_dir}/checkpoints; available '
        f'steps: {sorted(steps)}.'))
  try:
    abstract = _abstract_state(mode, mesh)
  except FileNotFoundError as e:
    raise cli.user_error(FileNotFoundError(
        f'Rebuilding the joint run\'s state needs its generator at config.gen_weights='
        f'{train_cfg.gen_weights!r} (its values are then replaced by the checkpoint\'s): '
        f'{e} Set --config.gen_weights to where that generator is now.')) from e
  # The newest step that restores completely, as training resumes; unreadable ones are
  # skipped and left where they are (evaluation never changes a training workdir).
  state, step, _ = checkpointing.restore(
      manager, abstract, None if step is None else int(step), mode.checkpoint_upgrades)
  return state, step


def _imported_state(mode, train_cfg, mesh) -> base.TrainState:
  """A state holding imported weights: the EBM as `params['ebm']` (= EMA), the
  generator as a frozen net (as joint mode keeps it)."""
  ebm_v = pretrained.load_pretrained(train_cfg.ebm_weights, mode.ebm, train_cfg.ebm_type)
  gen_v = pretrained.load_pretrained(train_cfg.gen_weights, mode.gen, train_cfg.gen_type)
  state = base.TrainState.create(variables={'ebm': ebm_v}, frozen={'gen': gen_v},
                                 ema={'ebm': ebm_v['params']}, rng=jax.random.PRNGKey(0))
  return jax.device_put(state, sharding.replicated(mesh))


def load_model(config, workdir: epath.Path, mesh):
  """Builds the evaluated nets and their weights.

  Returns `(mode, state, info)`: the training mode object (`modes.create` on a copy of
  `config` with the training mode), a `TrainState` with the weights, and a dict saying
  where they came from (`source`, `checkpoint_dir`, `checkpoint_step`, `weights`:
  'raw' | 'ema' | 'imported', `model_mode`). Raises before reading weights when the
  config's architecture differs from the run's (`checkpointing.ConfigMismatchError`).
  """
  if config.ebm_weights:
    train_cfg = training_config(config, None)
    mode = modes.create(train_cfg)
    state = _imported_state(mode, train_cfg, mesh)
    info = dict(source='imported', ebm_weights=str(config.ebm_weights),
                gen_weights=str(config.gen_weights), checkpoint_dir=None,
                checkpoint_step=None, weights='imported')
  else:
    ckpt_dir = epath.Path(config.eval_ckpt_dir or workdir)
    saved = _saved_run_config(ckpt_dir)
    if saved is None and not (ckpt_dir / 'checkpoints').exists():
      raise FileNotFoundError(
          f'No training run at {ckpt_dir} (no config.json, no checkpoints/). Set '
          '--config.eval_ckpt_dir to a training workdir (default: --workdir), or evaluate '
          'imported weights with --config.ebm_weights and --config.gen_weights.')
    train_cfg = training_config(config, saved)
    checkpointing.check_workdir_config(ckpt_dir, train_cfg)
    mode = modes.create(train_cfg)
    state, step = _restore_run(mode, train_cfg, ckpt_dir, config.eval_ckpt_step, mesh)
    info = dict(source='checkpoint', checkpoint_dir=str(ckpt_dir), checkpoint_step=step,
                weights='ema' if config.use_ema else 'raw',
                training_sampler=eval_settings.sampler_settings(saved) if saved else None)
  info['model_mode'] = train_cfg.mode
  return mode, state, info


# ------------------------------------------------------------------ sampling and energies


def sample_batches(mode, state, config, mesh) -> Iterator[Dict[str, jax.Array]]:
  """Yields `num_eval_samples / eval_batch_size` dicts `{'hat': G(z) + y, 'gen': G(z)}`
  of global arrays `[eval_batch_size, ...]` split over `data` (`mode.sample`: `gen` is
  the generator at the chains' initial latents), and `hat_3x`, ... for the longer
  `chain_length_factors` (the same chains continued: `long_run`). Batch `b` uses the
  key `fold_in(PRNGKey(eval_seed), b)`."""
  n = int(config.eval_batch_size)
  factors = long_run.check_factors(config.chain_length_factors)
  longer = len(factors) > 1
  state_sh = jax.tree_util.tree_map(lambda a: a.sharding, state)
  fn = sharding.jit(lambda s, k: mode.sample(s, k, n, with_chains=longer), mesh,
                    in_shardings=(state_sh, sharding.replicated(mesh)),
                    out_shardings=sharding.batch_sharded(mesh))
  base_key = jax.random.PRNGKey(int(config.eval_seed))
  for b in range(int(config.num_eval_samples) // n):
    key = jax.random.fold_in(base_key, b)
    out = fn(state, key)
    if longer:
      z, y = out.pop('z'), out.pop('y')
      out.update(long_run.continue_chains(mode, state, z, y, jax.random.fold_in(key, 1),
                                          factors, bool(config.use_ema), mesh))
    yield out


def collect_samples(batches: Iterator[Dict[str, jax.Array]], mesh, keep: int,
                    features: Optional[Callable] = None,
                    after_first: Optional[Callable[[], None]] = None):
  """Host copies of the first `keep` samples of `batches` (dicts of global arrays: `hat`,
  `gen` and the longer chains' `hat_3x`, ...), and, when `features` is given, the FID
  features of every sample.

  Returns `(samples, feats)`: dicts of `[keep, ...]` float32 arrays (`[0, ...]` when
  `keep` is 0) and of `[N, 2048]` features (None without `features`). Raises
  FloatingPointError if any sample of any batch is not finite, kept or not.
  """
  finite_fn = sharding.jit(lambda b: base.finite(*jax.tree_util.tree_leaves(b)), mesh,
                           out_shardings=sharding.replicated(mesh))
  kept: Dict[str, List[np.ndarray]] = {'hat': [], 'gen': []}
  feats: Dict[str, List[np.ndarray]] = {'hat': [], 'gen': []}
  shapes: Dict[str, tuple] = {}
  finite, count = [], 0
  for b, batch in enumerate(batches):
    if b == 0:
      kept, feats = ({k: [] for k in batch} for _ in range(2))
    finite.append(finite_fn(batch))
    shapes = {k: tuple(batch[k].shape[1:]) for k in kept}
    if features is not None:
      for k in feats:
        feats[k].append(fid_stats.batch_features(features, batch[k]))
    if count < keep:
      host = sharding.to_host(batch)
      for k in kept:
        kept[k].append(np.asarray(host[k], np.float32))
    count += int(batch['hat'].shape[0])
    if b == 0 and after_first is not None:
      after_first()
  bad = [b for b, ok in enumerate(jax.device_get(finite)) if not bool(ok)]
  if bad:
    raise FloatingPointError(
        f'Non-finite samples in batch(es) {bad}: the sampler diverged (check the step '
        'sizes and temperature of the evaluation config).')
  samples = {k: (np.concatenate(v)[:keep] if v else
                 np.zeros((0,) + shapes.get(k, ()), np.float32)) for k, v in kept.items()}
  return samples, ({k: np.concatenate(v) for k, v in feats.items()}
                   if features is not None else None)


def batched_apply(fn: Callable[[jax.Array], jax.Array], images: np.ndarray, batch: int,
                  mesh) -> np.ndarray:
  """`fn` over host images `[N, ...]` (the same on every process) in global batches of
  `batch` split over `data`; the last batch is padded and the padding dropped.
  Returns host numpy `[N, ...]`."""
  pi, pc = jax.process_index(), jax.process_count()
  local = batch // pc
  out = []
  for i in range(0, len(images), batch):
    chunk = np.asarray(images[i:i + batch], np.float32)
    valid = len(chunk)
    if valid < batch:
      chunk = np.concatenate([chunk, np.zeros((batch - valid,) + chunk.shape[1:],
                                              np.float32)])
    x = sharding.host_to_global(chunk[pi * local:(pi + 1) * local], mesh)
    out.append(np.asarray(sharding.to_host(fn(x)))[:valid])
  return np.concatenate(out)


def energy_fn(mode, state, mesh,
              use_ema: Optional[bool] = None) -> Callable[[jax.Array], jax.Array]:
  """`x [B, ...] -> H(x) [B]` with the evaluated weights: raw or EMA, `use_ema` (default
  `mode.config.use_ema`)."""
  use_ema = bool(mode.config.use_ema if use_ema is None else use_ema)
  state_sh = jax.tree_util.tree_map(lambda a: a.sharding, state)
  fn = sharding.jit(lambda s, x: mode.ebm_apply_fn(s, use_ema)(x).reshape(x.shape[0]),
                    mesh, in_shardings=(state_sh, sharding.batch_sharded(mesh)),
                    out_shardings=sharding.batch_sharded(mesh))
  return lambda x: fn(state, x)


# ------------------------------------------------------------------ outputs


def comparison_markdown(rows: List[Dict], metric: str) -> str:
  """The G(z) vs G(z) + y table (and the floor, when there is one) as Markdown."""
  lines = [f'| samples | {metric} |', '| --- | --- |']
  lines += [f'| {r["samples"]} | {r[metric]:.4f} |' for r in rows]
  return '\n'.join(lines) + '\n'


def _write_json(path: epath.Path, obj: Dict) -> None:
  path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


# ------------------------------------------------------------------ the command


def run(config, workdir: str) -> Dict[str, Any]:
  """Evaluates the model `config` names (see the module docstring) into
  `workdir/eval/<eval_name>/`. Returns the results dict that `results.json` holds."""
  t_start = time.time()
  sharding.configure_jax()
  workdir = epath.Path(workdir)
  is_chief = jax.process_index() == 0

  # --- every check that can fail, before anything is written
  config_lib.validate(config)
  mesh = sharding.create_mesh()
  with cli.user_errors(ValueError):  # evaluation settings: one line at the command line
    check_config(config, sharding.data_size(mesh), jax.process_count())
  n = int(config.num_eval_samples)
  metric = quality_metric(config) if n else None
  features = fingerprint = None
  if metric == 'fid':
    features, fingerprint = fid_stats.prepare(config, workdir, mesh)
  if ood.ood_names(config):
    ood.check_available(config)
  mode, state, info = load_model(config, workdir, mesh)

  sampler = eval_settings.sampler_settings(config, mode.sampler)
  settings = eval_settings.evaluation_settings(config, sampler)
  name = config.eval_name or eval_settings.default_eval_name(config, info, sampler)
  out_dir = eval_settings.eval_dir(workdir, name, settings)
  sharding.sync('hat_ebm_eval_checked')
  if is_chief:
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / 'results.json').exists():  # stale numbers must not outlive a crash
      (out_dir / 'results.json').unlink()
    (out_dir / 'config.json').write_text(config.to_json_best_effort(indent=2,
                                                                    sort_keys=True))
  logging.info('Evaluating %s weights (%s) into %s.', info['weights'], info['source'],
               out_dir)

  results: Dict[str, Any] = dict(
      eval_name=out_dir.name, dataset=config.dataset, image_size=int(config.image_size),
      model=info, metrics={}, settings=settings,
      sampling=dict(seed=int(config.eval_seed), num_samples=n,
                    batch_size=int(config.eval_batch_size),
                    num_batches=n // int(config.eval_batch_size),
                    label=sample_label(n, metric) if n else None,
                    keys='batch b: fold_in(PRNGKey(eval_seed), b)', sampler=sampler),
      devices=int(sharding.data_size(mesh)), processes=int(jax.process_count()),
      jax_version=jax.__version__)

  # --- samples and their quality, G(z) vs G(z) + y on the same latents
  if n:
    quality = _evaluate_samples(config, workdir, out_dir, mode, state, mesh, metric,
                                features, fingerprint, is_chief)
    results['metrics'].update(quality.pop('metrics'))
    results.update(quality)
  # --- OOD detection by energy
  if ood.ood_names(config):
    energy = energy_fn(mode, state, mesh)
    b = int(config.eval_batch_size)
    results['ood'] = ood.evaluate_ood(config, out_dir,
                                      lambda x: batched_apply(energy, x, b, mesh),
                                      info['weights'], is_chief)
    for k, v in results['ood']['table'].items():
      results['metrics'][f'ood_auroc_{k}'] = v['auroc']

  results['elapsed_s'] = time.time() - t_start
  if is_chief:
    _write_json(out_dir / 'results.json', results)
  logging.info('Evaluation results (%s): %s', out_dir, results['metrics'])
  return results


def _evaluate_samples(config, workdir, out_dir, mode, state, mesh, metric, features,
                      fingerprint, is_chief) -> Dict[str, Any]:
  """Samples `num_eval_samples` chains, scores `G(z)` and `G(z) + y` with `metric`
  (`metrics.quality`), writes `comparison.md`, `samples.npz` and the grids."""
  n = int(config.num_eval_samples)
  keep = n if int(config.num_saved_samples) < 0 else min(n, int(config.num_saved_samples))
  need_all = metric in ('digits_fd', 'mmd')
  t0 = time.time()

  def first_batch_done():
    logging.info('First batch (compile + run) took %.1fs.', time.time() - t0)

  samples, feats = collect_samples(sample_batches(mode, state, config, mesh), mesh,
                                   n if need_all else keep, features, first_batch_done)

  out: Dict[str, Any] = {}
  label = sample_label(n, metric)
  name = metric
  if metric == 'fid':
    ref_stats, ref_info = fid_stats.reference_statistics(config, workdir, features, mesh,
                                                         fingerprint, is_chief)
    ref_info.update(fid_weights=str(config.fid_weights), fid_weights_sha=fingerprint)
    name = fid_name(n)
    scored, reference = feats, dict(reference=ref_stats)
    out['reference'] = ref_info
  elif metric == 'digits_fd':
    scored, reference = samples, {}
    out['reference'] = dict(dataset='digits', split='train',
                            size=input_pipeline.num_examples(config, 'train'),
                            floor_split='test',
                            floor_size=input_pipeline.num_examples(config, 'test'))
  else:  # mmd: against the fixed points of config.split, floor: another split's
    floor_split = 'test' if config.split != 'test' else 'train'
    scored, reference = samples, dict(
        true=input_pipeline.load_array(config, config.split, n),
        floor=input_pipeline.load_array(config, floor_split, n))
    out['reference'] = dict(dataset=config.dataset, split=config.split, size=n,
                            floor_split=floor_split)
  scores = metrics.quality(metric, config, {k: scored[k] for k in sample_quality.PAIR},
                           **reference)
  extra = sample_quality.extra_scores(metric, config, scored, **reference)
  scores.update({k[len(metric) + 1:]: v for k, v in extra.items()
                 if k.startswith(metric + '_')})
  labels = dict(SAMPLE_ROWS, floor=FLOOR_ROWS.get(metric))
  labels.update({k: f'G(z) + y, {k.split("_")[-1]} chains ({k.split("_")[-1][:-1]} x '
                    f'mcmc_steps)' for k in scores if k.startswith('hat_')})
  rows = [dict(samples=labels[k], **{name: v}) for k, v in scores.items()]
  table_md = comparison_markdown(rows, name)
  logging.info('%s (%s, %d samples, seed %d):\n%s', name, label, n, config.eval_seed,
               table_md)
  out['metrics'] = {f'{name}_{k}': v for k, v in scores.items()}
  out['metrics'].update({k: v for k, v in extra.items() if not k.startswith(metric + '_')})
  out['comparison'] = dict(metric=name, label=label, rows=rows)
  if is_chief:
    (out_dir / 'comparison.md').write_text(
        f'{name} ({label}: {n} samples, eval_seed {config.eval_seed})\n\n' + table_md)
    saved = {k: v[:keep] for k, v in samples.items()}
    with (out_dir / 'samples.npz').open('wb') as f:
      np.savez(f, **saved)
    for k, v in saved.items():
      if len(v):
        visualize.save_samples(out_dir / f'{k}.png', v[:config.num_plot_samples],
                               f'{k} ({config.exp_name})')
  return out
