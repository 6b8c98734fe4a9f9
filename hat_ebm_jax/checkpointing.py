"""Checkpoints: the run's orbax `CheckpointManager`, and pretrained weights for joint mode.

Run checkpoints live in `WORKDIR/checkpoints/<step>` (orbax writes to a temporary folder
and renames it when complete, so the latest checkpoint is never half written), next to
`WORKDIR/config.json`, the config of the run that made them: resuming with a config that
changes the experiment (architecture, data, mode) is refused before anything is touched.

Pretrained generator weights (`config.gen_weights`) may be any of:
  * a directory written by `python -m hat_ebm_jax.convert` (`net.json` + `variables/`);
  * a TF checkpoint prefix of the authors' code (`.../ckpt`, with `ckpt.index` beside);
  * an autoencoder run's workdir (its latest checkpoint's decoder: how retrofit is
    chained after `cifar10_ae`).
"""

import json
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

from absl import logging
import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from hat_ebm_jax import convert, models

# Config keys that define the experiment: a workdir's checkpoints only resume under a
# config that agrees on all of them.
EXPERIMENT_KEYS = ('mode', 'dataset', 'image_size', 'nch', 'ebm_type', 'ebm_ngf',
                   'gen_type', 'gen_ngf', 'z_sz', 'gen_bottom', 'gen_factor', 'inf_type',
                   'inf_ngf', 'batch_size', 'persistent_size', 'seed')


class ConfigMismatchError(ValueError):
  pass


def _config_json(config) -> str:
  return config.to_json_best_effort(indent=2, sort_keys=True)


def check_workdir_config(workdir: epath.Path, config) -> Optional[Dict]:
  """Compares `config` with `workdir/config.json` if present; raises on a mismatch.

  Returns the saved config dict (None for a fresh workdir). Writes nothing.
  """
  path = workdir / 'config.json'
  if not path.exists():
    return None
  saved = json.loads(path.read_text())
  diffs = [f'{k}: workdir has {saved.get(k)!r}, config has {config.get(k)!r}'
           for k in EXPERIMENT_KEYS
           if k in saved and _norm(saved.get(k)) != _norm(config.get(k))]
  if diffs:
    raise ConfigMismatchError(
        f'Workdir {workdir} holds checkpoints of a different experiment:\n  ' +
        '\n  '.join(diffs) + '\nUse a new --workdir, or the same config to resume. '
        'Nothing was changed.')
  return saved


def _norm(v):
  return json.loads(json.dumps(v)) if v is not None else None


def write_workdir_config(workdir: epath.Path, config) -> None:
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'config.json').write_text(_config_json(config))


def _absolute(path: epath.Path) -> epath.Path:
  """`path` made absolute for orbax; URLs (`gs://...`) are absolute already.

  (`epath.Path('gs://b/x').resolve()` would prepend the working directory.)
  """
  return path if '://' in str(path) else path.resolve()


def create_manager(workdir: epath.Path, keep: int) -> ocp.CheckpointManager:
  """An orbax manager for `workdir/checkpoints` keeping the last `keep` checkpoints.

  Every process creates it and calls `save`/`restore` (collective); orbax has each
  process write its own shards and process 0 the metadata, and renames the step folder
  once all are done. `workdir` may be local or `gs://`.
  """
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(_absolute(epath.Path(workdir) / 'checkpoints'),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  manager.save(step, args=ocp.args.StandardSave(state), force=True)
  manager.wait_until_finished()


class Upgrade(NamedTuple):
  """How to read checkpoints of an older state layout (a mode's `checkpoint_upgrades`).

  `older(state_like)`: the state structure such checkpoints hold;
  `upgrade(restored, state_like)`: that restored state in today's structure.
  """
  what: str
  older: Callable[[Any], Any]
  upgrade: Callable[[Any, Any], Any]


def restore(manager: ocp.CheckpointManager, state_like: Any,
            step: Optional[int] = None, upgrades: Sequence[Upgrade] = ()) -> Any:
  """Restores `step` (default: latest) into the structure and shardings of `state_like`.

  A checkpoint that does not fit is tried against each of `upgrades` (older layouts of
  the same state) before it is refused; nothing on disk is changed either way.
  """
  step = manager.latest_step() if step is None else step
  to_abstract = lambda t: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, t)
  try:
    return manager.restore(step, args=ocp.args.StandardRestore(to_abstract(state_like)))
  except (ValueError, KeyError, TypeError) as e:
    for up in upgrades:
      try:
        older = manager.restore(
            step, args=ocp.args.StandardRestore(to_abstract(up.older(state_like))))
      except (ValueError, KeyError, TypeError):
        continue
      logging.info('Checkpoint %d in %s has an older layout (%s): upgraded on restore.',
                   step, manager.directory, up.what)
      return up.upgrade(older, state_like)
    raise ValueError(
        f'Checkpoint {step} in {manager.directory} does not fit this config\'s state '
        f'(another architecture or mode?): {e}') from e


def restore_raw(directory: epath.Path, step: Optional[int] = None) -> Dict:
  """Restores a run checkpoint as plain nested dicts of numpy arrays (no target).

  Works on any device count and process count (the arrays are not placed on devices),
  so a checkpoint of a pod run can be read on a laptop.
  """
  mngr = ocp.CheckpointManager(_absolute(epath.Path(directory) / 'checkpoints'),
                               options=ocp.CheckpointManagerOptions(create=False),
                               item_handlers=ocp.StandardCheckpointHandler())
  step = mngr.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f'No checkpoint in {directory}/checkpoints.')
  meta = mngr.item_metadata(step)
  target = jax.tree_util.tree_map(lambda m: np.empty(m.shape, m.dtype),
                                  getattr(meta, 'tree', meta))
  return mngr.restore(step, args=ocp.args.StandardRestore(target))


def save_pretrained(out_dir: str, net: str, net_kwargs: Dict, variables: Dict) -> str:
  """Writes `net.json` + an orbax `variables/` checkpoint. Refuses a non-empty `out_dir`."""
  out = epath.Path(out_dir)
  if out.exists() and any(out.iterdir()):
    raise FileExistsError(f'{out} exists and is not empty; choose a new --out (nothing '
                          'was written).')
  out.mkdir(parents=True, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(_absolute(out / 'variables'), jax.tree_util.tree_map(np.asarray, variables))
  ckptr.wait_until_finished()
  (out / 'net.json').write_text(json.dumps({'net': net, 'kwargs': net_kwargs}, indent=2))
  return str(out)


def load_pretrained(path: str, module, name: str) -> Dict:
  """Variables for `module` (net `name`) from any of the three pretrained sources."""
  p = epath.Path(path)
  expected = jax.eval_shape(lambda: models.init_variables(module, jax.random.PRNGKey(0)))
  if (p / 'net.json').exists():
    meta = json.loads((p / 'net.json').read_text())
    if meta['net'] != name:
      raise ValueError(f'{path} holds a {meta["net"]} ({meta["kwargs"]}), but the config '
                       f'asks for a {name}.')
    v = ocp.StandardCheckpointer().restore(_absolute(p / 'variables'))
    what = f'Pretrained weights {path}'
  elif epath.Path(str(path) + '.index').exists():
    _, v = convert.from_tf_checkpoint(str(path), name, **convert.net_kwargs(module))
    what = f'TF checkpoint {path}'
  elif (p / 'config.json').exists() and (p / 'checkpoints').exists():
    saved = json.loads((p / 'config.json').read_text())
    if saved.get('mode') != 'autoencoder':
      raise ValueError(f'{path} is a {saved.get("mode")} run, not an autoencoder run; '
                       'only an autoencoder workdir provides a generator (its decoder).')
    raw = restore_raw(p)
    v = {'params': raw['params']['dec']}
    if raw['batch_stats'].get('dec'):
      v['batch_stats'] = raw['batch_stats']['dec']
    what = f'Autoencoder run {path} (decoder)'
  else:
    raise FileNotFoundError(
        f'No pretrained weights at {path!r}. Give a directory written by '
        '`python -m hat_ebm_jax.convert`, a TF checkpoint prefix (.../ckpt with '
        'ckpt.index beside it), or an autoencoder run\'s workdir.')
  convert.check_tree_matches(expected, v, what)
  return jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(v))
