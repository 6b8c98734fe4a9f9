"""Run checkpoints: the run's orbax `CheckpointManager`, their integrity and restore.

Run checkpoints live in `WORKDIR/checkpoints/<step>` (orbax writes to a temporary folder
and renames it when complete, so the latest checkpoint is never half written), next to
`WORKDIR/config.json`, the config of the run that made them: resuming with a config that
changes the experiment (architecture, data, mode) is refused before anything is touched.

Pretrained weights (`config.gen_weights`, `ebm_weights`) are read and written by
`pretrained.py`. This module imports only orbax (and `cli`) of what can hold weights.
"""

import errno
import hashlib
import json
import logging as std_logging
import os
import re
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from hat_ebm_jax import cli

# Config keys that define the experiment: a workdir's checkpoints only resume under a
# config that agrees on all of them.
EXPERIMENT_KEYS = ('mode', 'dataset', 'image_size', 'nch', 'ebm_type', 'ebm_ngf',
                   'gen_type', 'gen_ngf', 'z_sz', 'gen_bottom', 'gen_factor', 'inf_type',
                   'inf_ngf', 'batch_size', 'persistent_size', 'seed')


class ConfigMismatchError(cli.UserError, ValueError):
  """A workdir holds checkpoints of another experiment (nothing is touched)."""


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


def absolute_path(path: epath.Path) -> epath.Path:
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
  return ocp.CheckpointManager(absolute_path(epath.Path(workdir) / 'checkpoints'),
                               options=options,
                               item_handlers=ocp.StandardCheckpointHandler())


# What orbax logs at WARNING for every read-only manager: that read-only is read-only.
READ_ONLY_NOTES = ('CheckpointManagerOptions.read_only=True', 'Given directory is read only')


class _DropReadOnlyNotes(std_logging.Filter):
  """Drops `READ_ONLY_NOTES`; every other record passes."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return not str(record.msg).startswith(READ_ONLY_NOTES)


def read_only_manager(directory: epath.Path) -> ocp.CheckpointManager:
  """A manager for `directory/checkpoints` that never writes, renames or deletes (and
  without orbax's two warnings saying so: `READ_ONLY_NOTES`)."""
  absl_logger, notes = std_logging.getLogger('absl'), _DropReadOnlyNotes()
  absl_logger.addFilter(notes)
  try:
    return ocp.CheckpointManager(absolute_path(epath.Path(directory) / 'checkpoints'),
                                 options=ocp.CheckpointManagerOptions(create=False,
                                                                      read_only=True),
                                 item_handlers=ocp.StandardCheckpointHandler())
  finally:
    absl_logger.removeFilter(notes)


# ------------------------------------------------------------------ integrity
#
# Orbax finalises a step by writing `commit_success.txt` and renaming its temporary
# folder, so a killed save leaves no `<step>` folder. What it does not catch is damage
# after the fact: a flipped byte inside a zstd-compressed chunk restores silently as
# wrong numbers (measured with orbax 0.12.8 / tensorstore 0.1.86; a truncated chunk or a
# damaged b-tree node does raise). So after each save process 0 writes CHECKSUMS, the
# SHA-256 of every file of the step, and every process checks them before a restore.

CHECKSUMS = 'hat_ebm_checksums.json'
COMMIT_MARKER = 'commit_success.txt'
# Folders under `checkpoints/` where steps are moved, never deleted. Their names hold no
# `_<digits>` and are not digits, so orbax does not take them for steps.
UNREADABLE = 'unreadable'
SUPERSEDED = 'superseded'


class DoesNotFitError(cli.UserError, ValueError):
  """A checkpoint holds another architecture or mode: every step would fail the same."""


class NoCheckpointError(cli.UserError, FileNotFoundError):
  """No checkpoint of a workdir restores (each step's reason in the message)."""


def _sha256(path: epath.Path) -> str:
  h = hashlib.sha256()
  with path.open('rb') as f:
    for block in iter(lambda: f.read(1 << 22), b''):
      h.update(block)
  return h.hexdigest()


def _files(step_dir: epath.Path) -> Dict[str, epath.Path]:
  """{path relative to `step_dir`: path} of every file below it but CHECKSUMS."""
  out, folders = {}, [step_dir]
  while folders:
    for p in folders.pop().iterdir():
      if p.is_dir():
        folders.append(p)
      elif p.name != CHECKSUMS:
        out[str(p.relative_to(step_dir))] = p
  return out


def write_checksums(step_dir: epath.Path) -> None:
  """Writes `step_dir/CHECKSUMS` ({relative path: sha256}), atomically (tmp + rename)."""
  sums = {name: _sha256(p) for name, p in sorted(_files(step_dir).items())}
  tmp = step_dir / (CHECKSUMS + '.tmp')
  tmp.write_text(json.dumps({'sha256': sums}, indent=1))
  tmp.rename(step_dir / CHECKSUMS)


def check_integrity(step_dir: epath.Path) -> Optional[str]:
  """Why `step_dir` is not a complete checkpoint, or None if it is (or cannot be told:
  a checkpoint without CHECKSUMS, from before they existed or killed right after the
  save, is then judged by its restore alone). Reads files only; no collectives."""
  if not (step_dir / COMMIT_MARKER).exists():
    meta = step_dir / '_CHECKPOINT_METADATA'
    committed = meta.exists() and json.loads(meta.read_text() or '{}').get(
        'commit_timestamp_nsecs')
    if not committed:
      return f'no commit marker ({COMMIT_MARKER}): the save did not finish'
  if not (step_dir / CHECKSUMS).exists():
    return None
  try:
    expected = json.loads((step_dir / CHECKSUMS).read_text())['sha256']
  except (ValueError, KeyError) as e:
    return f'{CHECKSUMS} is unreadable ({e})'
  have = _files(step_dir)
  for name, digest in expected.items():
    if name not in have:
      return f'{name} is missing'
    if _sha256(have[name]) != digest:
      return f'{name} does not match its checksum (damaged or truncated)'
  return None


class SaveError(cli.UserError, OSError):
  """A checkpoint could not be written for a reason of the machine (a full disk, a
  quota, permissions); the checkpoints saved before it are intact."""


# Reasons of the machine, as OSError and as TensorStore's messages name them.
_MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
_MACHINE_WORDS = tuple(os.strerror(e) for e in _MACHINE_ERRNOS)


def save(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
  """Saves `state` as `step` (collective), then process 0 writes its checksums.

  A save that fails for a reason of the machine (e.g. ENOSPC) raises SaveError naming
  the checkpoint that is intact; orbax leaves at most a `<step>.orbax-checkpoint-tmp-*`
  folder, which no restore reads.
  """
  previous = manager.latest_step()
  try:
    manager.save(step, args=ocp.args.StandardSave(state), force=True)
    manager.wait_until_finished()
    if jax.process_index() == 0:
      write_checksums(epath.Path(manager.directory) / str(step))
  except Exception as e:  # pylint: disable=broad-except
    if (getattr(e, 'errno', None) not in _MACHINE_ERRNOS
        and not any(w in str(e) for w in _MACHINE_WORDS)):
      raise
    reason = next((w for w in _MACHINE_WORDS if w in str(e)), str(e).splitlines()[0])
    raise SaveError(
        f'Saving checkpoint {step} in {manager.directory} failed: {reason}. The latest '
        f'complete checkpoint ({previous}) is intact; free space (or fix the folder) and '
        'rerun the same command to resume from it.') from e


class Upgrade(NamedTuple):
  """How to read checkpoints of an older state layout (a mode's `checkpoint_upgrades`).

  `older(state_like)`: the state structure such checkpoints hold;
  `upgrade(restored, state_like)`: that restored state in today's structure.
  """
  what: str
  older: Callable[[Any], Any]
  upgrade: Callable[[Any, Any], Any]


def _shapes(tree) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  """{path of names: shape} of a state, an abstract state or orbax's metadata tree."""
  def name(k):
    for attr in ('key', 'name', 'idx'):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  return {tuple(name(k) for k in path): tuple(np.shape(v) if not hasattr(v, 'shape')
                                              else v.shape)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _mismatches(stored, wanted, limit: int = 5) -> str:
  problems = [f'missing {"/".join(k)}' for k in sorted(set(wanted) - set(stored))]
  problems += [f'unexpected {"/".join(k)}' for k in sorted(set(stored) - set(wanted))]
  problems += [f'{"/".join(k)}: checkpoint has {stored[k]}, config needs {wanted[k]}'
               for k in sorted(set(stored) & set(wanted)) if stored[k] != wanted[k]]
  return '; '.join(problems[:limit]) + (' ...' if len(problems) > limit else '')


def _restore_step(manager, step: int, state_like: Any, upgrades: Sequence[Upgrade]):
  """Restores one step that passed `check_integrity`. Raises DoesNotFitError when its
  structure fits neither `state_like` nor an upgrade (judged on orbax's metadata, so a
  read error is never mistaken for another architecture); other errors are damage."""
  to_abstract = lambda t: jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, t)
  meta = manager.item_metadata(step)
  meta = getattr(meta, 'tree', meta)
  if state_like is None:  # as stored, host numpy
    target = jax.tree_util.tree_map(lambda m: np.empty(m.shape, m.dtype), meta)
    return manager.restore(step, args=ocp.args.StandardRestore(target))
  stored = _shapes(meta)
  if stored == _shapes(state_like):
    return manager.restore(step, args=ocp.args.StandardRestore(to_abstract(state_like)))
  for up in upgrades:
    older = up.older(state_like)
    if stored == _shapes(older):
      restored = manager.restore(step, args=ocp.args.StandardRestore(to_abstract(older)))
      logging.info('Checkpoint %d in %s has an older layout (%s): upgraded on restore.',
                   step, manager.directory, up.what)
      return up.upgrade(restored, state_like)
  raise DoesNotFitError(
      f'Checkpoint {step} in {manager.directory} does not fit this config\'s state '
      f'(another architecture or mode?): {_mismatches(stored, _shapes(state_like))}')


def _read_error(e: BaseException) -> str:
  """A one-line reason for a failed read: TensorStore's status line if there is one."""
  text = ' '.join(f'{x}' for x in (e, e.__cause__) if x is not None)
  status = re.search(r'\b(OUT_OF_RANGE|DATA_LOSS|FAILED_PRECONDITION|NOT_FOUND|'
                     r'INVALID_ARGUMENT|UNKNOWN|INTERNAL): [^\n]*', text)
  line = status.group(0) if status else text.strip().splitlines()[0] if text.strip() else ''
  return f'{type(e).__name__}: {line[:300]}'


def _all_agree(ok: bool) -> bool:
  """True iff `ok` on every process (a collective on several processes)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  flags = multihost_utils.process_allgather(np.asarray([int(ok)], np.int32))
  return bool(np.all(np.asarray(flags)))


def restore(manager: ocp.CheckpointManager, state_like: Any,
            step: Optional[int] = None, upgrades: Sequence[Upgrade] = ()
            ) -> Tuple[Any, int, Dict[int, str]]:
  """Restores the newest checkpoint that restores completely (or exactly `step`).

  Into the structure and shardings of `state_like` (None: as stored, numpy); a
  checkpoint of an older layout is read through `upgrades`. Steps are tried newest first; one that is incomplete, fails
  its checksums or fails to read is skipped (logged, and returned in `skipped` as
  {step: reason}; nothing on disk is changed here). On several processes every process
  calls it and all take the same step: a step is used only if it restored on all.

  Returns `(state, step, skipped)`. Raises DoesNotFitError at the first step of another
  architecture (all would fail alike), NoCheckpointError when none restores (listing each
  step and why) and ValueError for a pinned `step` that is absent.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  where = manager.directory
  if step is not None:
    if step not in steps:
      raise cli.user_error(ValueError(
          f'Step {step} is not in {where}; available steps: {sorted(steps)}. Pass one of '
          'them, or none for the newest complete one.'))
    steps = [step]
  skipped: Dict[int, str] = {}
  for s in steps:
    problem = check_integrity(epath.Path(where) / str(s))
    restored = None
    if problem is None:
      try:
        restored = _restore_step(manager, s, state_like, upgrades)
      except DoesNotFitError:
        raise
      except Exception as e:  # pylint: disable=broad-except  # TensorStore, json, OS
        problem = _read_error(e)
    if _all_agree(problem is None):
      return restored, s, skipped
    skipped[s] = problem or 'unreadable on another process'
    logging.warning('Checkpoint %d in %s is unreadable, skipped: %s', s, where,
                    skipped[s])
  listing = '\n  '.join(f'step {s}: {r}' for s, r in skipped.items())
  raise NoCheckpointError(
      f'No checkpoint in {where} restores:\n  {listing}\nThey were left as they are. '
      'Use a new --workdir, or repair or remove them.')


def set_aside(manager: ocp.CheckpointManager, steps: Sequence[int],
              folder: str) -> Dict[int, str]:
  """Moves `checkpoints/<step>` to `checkpoints/<folder>/<step>-<UTC time>` for each of
  `steps` (process 0; every process calls it: a barrier follows), so that orbax neither
  counts them for `keep_checkpoints` nor collides with them when it saves that step
  again. Nothing is deleted. Returns {step: new path}."""
  root = epath.Path(manager.directory)
  stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
  moved = {s: str(root / folder / f'{s}-{stamp}') for s in steps}
  if jax.process_index() == 0:
    for s, dest in moved.items():
      (root / folder).mkdir(parents=True, exist_ok=True)
      (root / str(s)).rename(dest)
      logging.warning('Moved checkpoint %d to %s (nothing was deleted).', s, dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices('hat_ebm_set_aside')
  return moved


def restore_raw(directory: epath.Path, step: Optional[int] = None) -> Dict:
  """Restores a run checkpoint as plain nested dicts of numpy arrays (no target).

  Works on any device count and process count (the arrays are not placed on devices),
  so a checkpoint of a pod run can be read on a laptop. Skips unreadable checkpoints
  like `restore`, and changes nothing on disk.
  """
  manager = read_only_manager(directory)
  if not manager.all_steps():
    raise cli.user_error(FileNotFoundError(f'No checkpoint in {directory}/checkpoints.'))
  try:
    return restore(manager, None, step)[0]
  finally:
    manager.close()
