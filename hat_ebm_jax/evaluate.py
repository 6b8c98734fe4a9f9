"""Evaluation (`config.mode = 'evaluate'`): samples with SPEC §7's settings, their quality
(FID, `digits_fd` or MMD) for the generator alone `G(z)` and the Hat EBM `G(z) + y` of the
same latents, and out-of-distribution detection with the energy `H(x)`.

    python -m hat_ebm_jax.main --config=configs/eval_cifar10_synth.py --workdir=RUN \
        --config.fid_weights=fid_inception.npz

What is evaluated (`load_model`):
  * a training run: the latest (or `eval_ckpt_step`) checkpoint of `eval_ckpt_dir`
    (default: `--workdir`), raw or EMA weights (`use_ema`). The nets are those of the
    run's training mode (`eval_model_mode`, or the `mode` in the run's `config.json`),
    built by `modes.create` and restored into `init_state`'s structure; a config whose
    architecture differs from the run's is refused before anything is read;
  * imported weights: `ebm_weights` and `gen_weights`, each a TF checkpoint prefix of the
    authors' code or a `python -m hat_ebm_jax.convert` output directory.

What is computed (`run`):
  * `num_eval_samples` chains in global batches of `eval_batch_size` split over the
    `data` axis of all devices; batch `b` starts from `fold_in(PRNGKey(eval_seed), b)`,
    so the numbers depend only on the seed, not on the device count;
  * the quality metric: FID (`fid/`) for tfds image datasets (and for digits when
    `fid_weights` is given), against the statistics of `num_eval_samples` images of
    `config.split` (cached in `WORKDIR/eval/fid_stats_<dataset>_<split>_<size>_<n>.npz`, or
    `fid_stats`); `digits_fd` (floor, `G(z)`, `G(z) + y`) for digits; squared MMD against
    the true density for 2D toys. 49,920 samples (520 x 96) is the paper's protocol, named
    `fid`; fewer is a proxy, named `fid_proxy_<n>`;
  * OOD detection (`ood_datasets`): energies of `num_ood_samples` images of `ood_split`
    and of each OOD set, AUROC per pair (`metrics.ood_auroc`).

Outputs, in `WORKDIR/eval/<eval_name>/` (never in `checkpoints/`): `results.json` (all
numbers with the seed, sample count, reference set, weights, checkpoint step, sampler
settings and the protocol-or-proxy label), `comparison.md`, `samples.npz`, `hat.png`,
`gen.png`, `ood.json`, `ood.md`, `ood.csv`, `ood_hist.png`, and the evaluation's
`config.json`. Every check that can fail runs before anything is written.
"""

import hashlib
import json
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath

from hat_ebm_jax import (checkpointing, cli, config_lib, input_pipeline, metrics, modes,
                         pretrained, sharding, visualize)
from hat_ebm_jax.datasets import digits
from hat_ebm_jax.modes import base

PROTOCOL_SAMPLES = 49920  # SPEC §7: 520 batches of 96
EVAL_MODEL_MODES = ('synthesis', 'joint')
DERIVED_OOD = ('noise', 'shuffled', 'inverted')
REFERENCE_SEED = 0  # the FID reference images do not depend on eval_seed


# ------------------------------------------------------------------ config and checks


def quality_metric(config) -> str:
  """'fid', 'digits_fd' or 'mmd': what `num_eval_samples` samples are scored with."""
  if config.dataset in config_lib.TOY_DATASETS:
    return 'mmd'
  if config.dataset == 'digits':
    return 'fid' if config.fid_weights else 'digits_fd'
  return 'fid'


def sample_label(n: int, metric: str = 'fid') -> str:
  """'protocol' for FID on SPEC §7's 49,920 samples, else 'proxy_<n>' (every offline
  metric is a proxy)."""
  return 'protocol' if metric == 'fid' and n == PROTOCOL_SAMPLES else f'proxy_{n}'


def fid_name(n: int) -> str:
  """The FID's name in the results: `fid` (protocol) or `fid_proxy_<n>`."""
  return 'fid' if n == PROTOCOL_SAMPLES else f'fid_{sample_label(n)}'


def ood_names(config) -> List[str]:
  """`config.ood_datasets` ('noise,shuffled,...') as a list of names."""
  return [s.strip() for s in str(config.ood_datasets or '').split(',') if s.strip()]


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
                       'generator (TF checkpoint prefix or hat_ebm_jax.convert output).')
    if not config.eval_model_mode:
      raise ValueError('Imported weights (config.ebm_weights) need '
                       'config.eval_model_mode (synthesis or joint): there is no run '
                       'config.json to read it from.')
    if config.use_ema:
      raise ValueError('config.use_ema=True, but imported weights (config.ebm_weights) '
                       'have no EMA: set --config.use_ema=False.')
  names = ood_names(config)
  if names and config.dataset in config_lib.TOY_DATASETS:
    raise ValueError('config.ood_datasets is for image datasets; the 2D toys have no OOD '
                     'sets. Set --config.ood_datasets=\'\'.')
  for name in names:
    if name not in DERIVED_OOD + config_lib.IMAGE_DATASETS or name == config.dataset:
      raise ValueError(
          f'config.ood_datasets: unknown OOD set {name!r}; give a comma-separated list '
          f'of {", ".join(DERIVED_OOD)} (derived from config.ood_split) or an image '
          f'dataset other than {config.dataset!r} '
          f'({", ".join(d for d in config_lib.IMAGE_DATASETS if d != config.dataset)}).')
  if names and int(config.num_ood_samples) < 1:
    raise ValueError(f'config.num_ood_samples must be >= 1; got {config.num_ood_samples}.')
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
  (`eval_model_mode`, else the run's `config.json`), for `modes.create`."""
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
    if mode == 'joint' and not train_cfg.gen_weights and saved:
      train_cfg.gen_weights = saved.get('gen_weights', '')
  return train_cfg


def _fid_stats_path(config, workdir: epath.Path) -> epath.Path:
  if config.fid_stats:
    return epath.Path(config.fid_stats)
  name = (f'fid_stats_{config.dataset}_{config.split}_{config.image_size}_'
          f'{config.num_eval_samples}.npz')
  return workdir / 'eval' / name


def _file_fingerprint(path: str) -> str:
  """First 16 hex digits of the file's sha256 (ties cached statistics to FID weights)."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 22), b''):
      h.update(chunk)
  return h.hexdigest()[:16]


def _check_dataset(config, dataset: str) -> None:
  """Raises `input_pipeline.DatasetNotFoundError` when a tfds dataset is not prepared
  (derived OOD sets and the offline datasets need nothing)."""
  if dataset in input_pipeline.TFDS_DATASETS:
    input_pipeline.tfds_builder(dataset, config.data_dir)


def _prepare_fid(config, workdir: epath.Path, mesh) -> Tuple[Callable, str]:
  """Loads the FID Inception (`fid_feature_fn`) and fingerprints its file; checks that
  the reference statistics are available (given, cached, or a prepared dataset).
  Raises FileNotFoundError naming the key and the fix."""
  if not config.fid_weights:
    from hat_ebm_jax.fid import inception  # pylint: disable=g-import-not-at-top
    raise FileNotFoundError(
        f'FID on {config.dataset} needs the FID Inception weights: set '
        '--config.fid_weights=PATH.npz. This package never downloads them; get '
        f'pytorch-fid\'s converted TF graph {inception.WEIGHTS_URL} and convert it once '
        'with `python -m hat_ebm_jax.fid.convert_weights '
        '--pth=pt_inception-2015-12-05-6726825d.pth --out=fid_inception.npz`.')
  if config.fid_stats and not epath.Path(config.fid_stats).exists():
    raise FileNotFoundError(f'config.fid_stats={config.fid_stats!r} does not exist; give '
                            'an .npz with mu and sigma, or \'\' to compute the '
                            'reference statistics from config.split.')
  features = fid_feature_fn(config.fid_weights, mesh)
  if not _fid_stats_path(config, workdir).exists():
    _check_dataset(config, config.dataset)
  return features, _file_fingerprint(config.fid_weights)


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
                weights='ema' if config.use_ema else 'raw')
  info['model_mode'] = train_cfg.mode
  return mode, state, info


# ------------------------------------------------------------------ sampling and energies


def sample_batches(mode, state, config, mesh) -> Iterator[Dict[str, jax.Array]]:
  """Yields `num_eval_samples / eval_batch_size` dicts `{'hat': G(z) + y, 'gen': G(z)}`
  of global arrays `[eval_batch_size, ...]` split over `data` (`mode.sample`: `gen` is
  the generator at the chains' initial latents). Batch `b` uses the key
  `fold_in(PRNGKey(eval_seed), b)`."""
  n = int(config.eval_batch_size)
  state_sh = jax.tree_util.tree_map(lambda a: a.sharding, state)
  fn = sharding.jit(lambda s, k: mode.sample(s, k, n), mesh,
                    in_shardings=(state_sh, sharding.replicated(mesh)),
                    out_shardings=sharding.batch_sharded(mesh))
  base_key = jax.random.PRNGKey(int(config.eval_seed))
  for b in range(int(config.num_eval_samples) // n):
    yield fn(state, jax.random.fold_in(base_key, b))


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


def energy_fn(mode, state, mesh) -> Callable[[jax.Array], jax.Array]:
  """`x [B, ...] -> H(x) [B]` with the evaluated weights (raw or EMA: `use_ema`)."""
  use_ema = bool(mode.config.use_ema)
  state_sh = jax.tree_util.tree_map(lambda a: a.sharding, state)
  fn = sharding.jit(lambda s, x: mode.ebm_apply_fn(s, use_ema)(x).reshape(x.shape[0]),
                    mesh, in_shardings=(state_sh, sharding.batch_sharded(mesh)),
                    out_shardings=sharding.batch_sharded(mesh))
  return lambda x: fn(state, x)


# ------------------------------------------------------------------ FID


def _to_rgb(x):
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def fid_feature_fn(weights_path: str, mesh) -> Callable[[jax.Array], jax.Array]:
  """`images [B, S, S, 1 or 3] in [-1, 1] -> pool_3 features [B, 2048]` (sharded batch).
  Raises FileNotFoundError (where to get the weights, how to convert them) if missing."""
  from hat_ebm_jax import fid  # pylint: disable=g-import-not-at-top
  module, variables = fid.load_fid_inception(weights_path)
  variables = jax.device_put(variables, sharding.replicated(mesh))
  fn = sharding.jit(lambda v, x: module.apply(v, _to_rgb(x)), mesh,
                    in_shardings=(sharding.replicated(mesh), sharding.batch_sharded(mesh)),
                    out_shardings=sharding.batch_sharded(mesh))
  return lambda x: fn(variables, x)


def reference_fid_stats(config, features: Callable, mesh) -> Tuple[np.ndarray, np.ndarray]:
  """`(mu, sigma)` of the features of `num_eval_samples` images of `config.split`, read
  through the input pipeline (its training preprocessing, stream seed `REFERENCE_SEED`)
  in batches of `eval_batch_size`."""
  n, b = int(config.num_eval_samples), int(config.eval_batch_size)
  it = input_pipeline.create_iterator(
      config, split=config.split, batch_size=b, seed=REFERENCE_SEED,
      process_index=jax.process_index(), process_count=jax.process_count())
  feats = [np.asarray(sharding.to_host(features(sharding.host_to_global(next(it), mesh))),
                      np.float64) for _ in range(n // b)]
  return metrics.feature_statistics(np.concatenate(feats))


def load_or_compute_fid_stats(config, workdir: epath.Path, features: Callable, mesh,
                              fingerprint: str, is_chief: bool) -> Tuple[Tuple, Dict]:
  """Reference statistics from `config.fid_stats` (an .npz with `mu`, `sigma`), the
  workdir cache (if made with the same FID weights), or computed and cached.

  Returns `((mu [D], sigma [D, D]), info)`; `info` describes the reference set (dataset,
  split, size, image size, stream seed, file, whether it was read from a file).
  """
  path = _fid_stats_path(config, workdir)
  info = dict(dataset=config.dataset, split=config.split, size=int(config.num_eval_samples),
              image_size=int(config.image_size), seed=REFERENCE_SEED)
  if path.exists():
    with path.open('rb') as f, np.load(f) as z:
      stored = str(z['fid_weights_sha'][()]) if 'fid_weights_sha' in z.files else ''
      if config.fid_stats or stored == fingerprint:
        if config.fid_stats:  # describe the given file by what it says, if anything
          info = {k: z[k][()].item() for k in info if k in z.files}
        info.update(file=str(path), cached=True)
        return (np.asarray(z['mu'], np.float64), np.asarray(z['sigma'], np.float64)), info
    logging.warning('%s was made with other FID weights; recomputing it.', path)
  mu, sigma = reference_fid_stats(config, features, mesh)
  if is_chief:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open('wb') as f:
      np.savez(f, mu=mu, sigma=sigma, fid_weights_sha=np.asarray(fingerprint),
               **{k: np.asarray(v) for k, v in info.items()})
  info.update(file=str(path), cached=False)
  return (mu, sigma), info


# ------------------------------------------------------------------ OOD


def shuffle_pixels(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Each image `[H, W, C]` of `[N, H, W, C]` with its `H * W` pixel positions permuted
  (its own permutation; a pixel's channels move together)."""
  n, h, w, c = images.shape
  flat = images.reshape(n, h * w, c)
  perms = np.argsort(rng.random((n, h * w)), axis=1)
  return np.take_along_axis(flat, perms[:, :, None], axis=1).reshape(images.shape)


def ood_sets(config, x_in: np.ndarray) -> Dict[str, np.ndarray]:
  """The OOD sets of `config.ood_datasets`, each `[<= num_ood_samples, S, S, nch]`.

  `noise`: uniform in `[-1, 1]`; `shuffled`: `x_in` with each image's pixels permuted;
  `inverted`: `-x_in`; a dataset name: the first images of its `ood_split` through the
  same preprocessing. Randomness from `default_rng([eval_seed, index of the set])`.
  """
  out = {}
  for i, name in enumerate(ood_names(config)):
    rng = np.random.default_rng([int(config.eval_seed), i])
    if name == 'noise':
      out[name] = rng.uniform(-1.0, 1.0, x_in.shape).astype(np.float32)
    elif name == 'shuffled':
      out[name] = shuffle_pixels(x_in, rng)
    elif name == 'inverted':
      out[name] = -x_in
    else:
      other = config.copy_and_resolve_references()
      with other.unlocked():
        other.dataset = name
      out[name] = input_pipeline.load_array(other, config.ood_split,
                                            int(config.num_ood_samples))
  return out


def ood_table(energy_in: np.ndarray, energies: Dict[str, np.ndarray]) -> Dict[str, Dict]:
  """Per OOD set: AUROC (OOD = higher energy), its size and mean energy."""
  return {name: dict(auroc=metrics.ood_auroc(energy_in, e), n=int(e.size),
                     mean_energy=float(np.mean(e)), std_energy=float(np.std(e)))
          for name, e in energies.items()}


def _ood_markdown(in_name: str, n_in: int, mean_in: float, table: Dict) -> str:
  lines = [f'| OOD set | n | mean H(x) | AUROC vs {in_name} (n={n_in}, mean H(x) '
           f'{mean_in:.4g}) |', '| --- | --- | --- | --- |']
  lines += [f'| {k} | {v["n"]} | {v["mean_energy"]:.4g} | {v["auroc"]:.4f} |'
            for k, v in table.items()]
  return '\n'.join(lines) + '\n'


def _ood_csv(in_name: str, table: Dict) -> str:
  rows = ['in_distribution,ood_set,n,mean_energy,auroc']
  rows += [f'{in_name},{k},{v["n"]},{v["mean_energy"]:.6g},{v["auroc"]:.6f}'
           for k, v in table.items()]
  return '\n'.join(rows) + '\n'


def _ood_histogram(path: epath.Path, in_name: str, energy_in: np.ndarray,
                   energies: Dict[str, np.ndarray], table: Dict) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  everything = np.concatenate([energy_in] + list(energies.values()))
  lo, hi = np.percentile(everything, [0.5, 99.5])
  bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 60)
  fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
  ax.hist(np.clip(energy_in, lo, hi), bins=bins, alpha=0.6, density=True,
          label=f'{in_name} (in)')
  for name, e in energies.items():
    ax.hist(np.clip(e, lo, hi), bins=bins, alpha=0.45, density=True,
            label=f'{name} (AUROC {table[name]["auroc"]:.3f})')
  ax.set_xlabel('energy H(x)')
  ax.set_ylabel('density')
  ax.legend(fontsize=8)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', bbox_inches='tight')
  plt.close(fig)
  path.write_bytes(buf.getvalue())


# ------------------------------------------------------------------ outputs


def default_eval_name(config, info: Dict) -> str:
  """`<exp_name>_<raw|ema>_step<step>_seed<eval_seed>` (`..._imported_seed<s>`)."""
  if info['source'] == 'imported':
    return f'{config.exp_name}_imported_seed{config.eval_seed}'
  return (f'{config.exp_name}_{info["weights"]}_step{info["checkpoint_step"]}_'
          f'seed{config.eval_seed}')


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
    features, fingerprint = _prepare_fid(config, workdir, mesh)
  if ood_names(config):
    for name in [config.dataset] + ood_names(config):
      _check_dataset(config, name)
  mode, state, info = load_model(config, workdir, mesh)

  out_dir = workdir / 'eval' / (config.eval_name or default_eval_name(config, info))
  sharding.sync('hat_ebm_eval_checked')
  if is_chief:
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / 'results.json').exists():  # stale numbers must not outlive a crash
      (out_dir / 'results.json').unlink()
    (out_dir / 'config.json').write_text(config.to_json_best_effort(indent=2,
                                                                    sort_keys=True))
  logging.info('Evaluating %s weights (%s) into %s.', info['weights'], info['source'],
               out_dir)

  sampler = dict(mode.sampler, init_scale_latent=float(config.init_scale_latent),
                 init_scale_res=float(config.init_scale_res))
  results: Dict[str, Any] = dict(
      eval_name=out_dir.name, dataset=config.dataset, image_size=int(config.image_size),
      model=info, metrics={},
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
  if ood_names(config):
    results['ood'] = _evaluate_ood(config, out_dir, mode, state, mesh, info['weights'],
                                   is_chief)
    for k, v in results['ood']['table'].items():
      results['metrics'][f'ood_auroc_{k}'] = v['auroc']

  results['elapsed_s'] = time.time() - t_start
  if is_chief:
    _write_json(out_dir / 'results.json', results)
  logging.info('Evaluation results (%s): %s', out_dir, results['metrics'])
  return results


def _evaluate_samples(config, workdir, out_dir, mode, state, mesh, metric, features,
                      fingerprint, is_chief) -> Dict[str, Any]:
  n = int(config.num_eval_samples)
  keep = n if int(config.num_saved_samples) < 0 else min(n, int(config.num_saved_samples))
  need_all = metric in ('digits_fd', 'mmd')
  kept: Dict[str, List[np.ndarray]] = {'hat': [], 'gen': []}
  feats: Dict[str, List[np.ndarray]] = {'hat': [], 'gen': []}
  count = 0
  t0 = time.time()
  for batch in sample_batches(mode, state, config, mesh):
    if features is not None:
      for k in feats:
        feats[k].append(np.asarray(sharding.to_host(features(batch[k])), np.float64))
    if need_all or count < keep:
      host = sharding.to_host(batch)
      for k in kept:
        kept[k].append(np.asarray(host[k], np.float32))
    count += int(config.eval_batch_size)
    if count == int(config.eval_batch_size):
      logging.info('First batch (compile + run) took %.1fs.', time.time() - t0)
  samples = {k: np.concatenate(v) for k, v in kept.items()}
  finite = all(np.isfinite(v).all() for v in samples.values())
  if not finite:
    raise FloatingPointError('Non-finite samples: the sampler diverged (check the step '
                             'sizes and temperature of the evaluation config).')

  out: Dict[str, Any] = {}
  label = sample_label(n, metric)
  if metric == 'fid':
    ref_stats, ref_info = load_or_compute_fid_stats(config, workdir, features, mesh,
                                                    fingerprint, is_chief)
    ref_info['fid_weights'] = str(config.fid_weights)
    ref_info['fid_weights_sha'] = fingerprint
    name = fid_name(n)
    scores = {k: metrics.frechet_distance(*metrics.feature_statistics(np.concatenate(v)),
                                          *ref_stats) for k, v in feats.items()}
    rows = [dict(samples='G(z) (generator alone)', **{name: scores['gen']}),
            dict(samples='G(z) + y (Hat EBM)', **{name: scores['hat']})]
    out['reference'] = ref_info
  elif metric == 'digits_fd':
    name = 'digits_fd'
    table = metrics.digits_fd_table(samples['gen'], samples['hat'], config.image_size)
    scores = table
    rows = [dict(samples=f'real test digits (floor, n={digits.NUM_TEST})',
                 digits_fd=table['floor']),
            dict(samples='G(z) (generator alone)', digits_fd=table['gen']),
            dict(samples='G(z) + y (Hat EBM)', digits_fd=table['hat'])]
    out['reference'] = dict(dataset='digits', split='train',
                            size=input_pipeline.num_examples(config, 'train'),
                            floor_split='test',
                            floor_size=input_pipeline.num_examples(config, 'test'))
  else:  # mmd
    name = 'mmd'
    true = input_pipeline.load_array(config, config.split, n)
    other = input_pipeline.load_array(config, 'test' if config.split != 'test' else
                                      'train', n)
    scores = dict(floor=metrics.mmd(other, true), gen=metrics.mmd(samples['gen'], true),
                  hat=metrics.mmd(samples['hat'], true))
    rows = [dict(samples='true points, another split (floor)', mmd=scores['floor']),
            dict(samples='G(z) (generator alone)', mmd=scores['gen']),
            dict(samples='G(z) + y (Hat EBM)', mmd=scores['hat'])]
    out['reference'] = dict(dataset=config.dataset, split=config.split, size=n,
                            floor_split='test' if config.split != 'test' else 'train')
  table_md = comparison_markdown(rows, name)
  logging.info('%s (%s, %d samples, seed %d):\n%s', name, label, n, config.eval_seed,
               table_md)
  out['metrics'] = {f'{name}_{k}': float(v) for k, v in scores.items()}
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


def _evaluate_ood(config, out_dir, mode, state, mesh, weights: str,
                  is_chief: bool) -> Dict[str, Any]:
  x_in = input_pipeline.load_array(config, config.ood_split, int(config.num_ood_samples))
  sets = ood_sets(config, x_in)
  energy = energy_fn(mode, state, mesh)
  b = int(config.eval_batch_size)
  e_in = batched_apply(energy, x_in, b, mesh)
  energies = {k: batched_apply(energy, v, b, mesh) for k, v in sets.items()}
  bad = [k for k, v in [('in', e_in)] + list(energies.items()) if not np.isfinite(v).all()]
  if bad:
    raise FloatingPointError(f'Non-finite energies for {bad}: the EBM diverged.')
  in_name = f'{config.dataset}/{config.ood_split}'
  table = ood_table(e_in, energies)
  md = _ood_markdown(in_name, len(e_in), float(np.mean(e_in)), table)
  logging.info('OOD detection by energy:\n%s', md)
  result = dict(in_distribution=dict(dataset=config.dataset, split=config.ood_split,
                                     n=int(len(e_in)), mean_energy=float(np.mean(e_in)),
                                     std_energy=float(np.std(e_in))),
                table=table, seed=int(config.eval_seed), weights=weights)
  if is_chief:
    _write_json(out_dir / 'ood.json', result)
    (out_dir / 'ood.md').write_text(md)
    (out_dir / 'ood.csv').write_text(_ood_csv(in_name, table))
    _ood_histogram(out_dir / 'ood_hist.png', in_name, e_in, energies, table)
  return result
