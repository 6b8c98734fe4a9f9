"""A damaged checkpoint never stops a run that has a good one, and is never deleted: the
newest checkpoint that restores completely is used, the unreadable ones are set aside in
`checkpoints/unreadable/`, evaluation only reads, and a full disk stops the save with
one line while the previous checkpoint stays restorable.

These run in-process on a small state of plain arrays, through the `checkpointing` and
`train` functions a run calls (a real state would cost half a minute of net
initialisation per test). The kill -9 suite and the
two-process cases run whole training commands: `tests/test_kill.py` (slow tier).
"""

import errno
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from hat_ebm_jax import checkpointing, cli, train
from tests.conftest import (flip_byte, largest_array_file, remove_commit_marker, step_dir,
                            truncate)


def small_state(step: int):
  """A state of a few arrays whose values depend on `step`."""
  return {'params': {'w': jnp.arange(2000, dtype=jnp.float32).reshape(20, 100) + step,
                     'b': jnp.full((50,), step, jnp.float32)},
          'step': jnp.asarray(step, jnp.int32)}


def save_steps(workdir, steps, keep=5):
  manager = checkpointing.create_manager(epath.Path(workdir), keep)
  for s in steps:
    checkpointing.save(manager, s, small_state(s))
  manager.close()
  return checkpointing.create_manager(epath.Path(workdir), keep)


def tree_files(path):
  return sorted(str(p.relative_to(path)) for p in pathlib.Path(path).rglob('*'))


def assert_is_step(restored, step):
  want = small_state(step)
  for k in ('w', 'b'):
    np.testing.assert_array_equal(np.asarray(restored['params'][k]),
                                  np.asarray(want['params'][k]))
  assert int(restored['step']) == step


# ----------------------------------------------------------------- detection


def test_a_flipped_byte_that_orbax_reads_as_wrong_numbers_is_caught_by_the_checksums(
    tmp_path):
  manager = save_steps(tmp_path, [1, 2])
  flip_byte(largest_array_file(tmp_path, 2))
  # Orbax alone restores the damaged step without an error, with other numbers.
  to_abstract = lambda t: jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), t)
  silent = manager.restore(2, args=ocp.args.StandardRestore(to_abstract(small_state(2))))
  assert not np.array_equal(np.asarray(silent['params']['w']),
                            np.asarray(small_state(2)['params']['w']))
  # The checksums name the file, and the newest good step is restored instead.
  assert 'does not match its checksum' in checkpointing.check_integrity(
      step_dir(tmp_path, 2))
  restored, step, skipped = checkpointing.restore(manager, small_state(0))
  assert step == 1 and list(skipped) == [2] and 'checksum' in skipped[2]
  assert_is_step(restored, 1)


@pytest.mark.parametrize('damage', ['truncated', 'flipped', 'no_commit_marker'])
def test_the_newest_complete_checkpoint_is_restored_and_nothing_is_changed(tmp_path,
                                                                         damage):
  manager = save_steps(tmp_path, [1, 2, 3])
  if damage == 'truncated':
    truncate(largest_array_file(tmp_path, 3))
  elif damage == 'flipped':
    flip_byte(largest_array_file(tmp_path, 3))
  else:
    remove_commit_marker(tmp_path, 3)
  before = tree_files(tmp_path)
  restored, step, skipped = checkpointing.restore(manager, small_state(0))
  assert step == 2 and list(skipped) == [3]
  assert_is_step(restored, 2)
  assert tree_files(tmp_path) == before  # restore only reads


def test_a_damaged_checkpoint_without_checksums_is_caught_by_its_read_error(tmp_path):
  """Checkpoints written before the checksums existed: a truncated chunk fails to read
  (TensorStore OUT_OF_RANGE) and is skipped like any other damage."""
  manager = save_steps(tmp_path, [1, 2])
  for s in (1, 2):
    (step_dir(tmp_path, s) / checkpointing.CHECKSUMS).unlink()
  truncate(largest_array_file(tmp_path, 2))
  restored, step, skipped = checkpointing.restore(manager, small_state(0))
  assert step == 1 and 'OUT_OF_RANGE' in skipped[2]
  assert_is_step(restored, 1)


def test_another_architecture_stops_at_once_with_the_mismatch(tmp_path):
  manager = save_steps(tmp_path, [1, 2])
  wider = {'params': {'w': jnp.zeros((20, 200)), 'b': jnp.zeros((50,))},
           'step': jnp.asarray(0, jnp.int32)}
  with pytest.raises(checkpointing.DoesNotFitError,
                     match=r'Checkpoint 2 .* does not fit .*params/w: checkpoint has '
                     r'\(20, 100\), config needs \(20, 200\)'):
    checkpointing.restore(manager, wider)


def test_when_no_checkpoint_restores_one_message_lists_each_step(tmp_path):
  manager = save_steps(tmp_path, [1, 2])
  truncate(largest_array_file(tmp_path, 2))
  remove_commit_marker(tmp_path, 1)
  with pytest.raises(checkpointing.NoCheckpointError) as e:
    checkpointing.restore(manager, small_state(0))
  text = str(e.value)
  assert 'step 2: ' in text and 'checksum' in text
  assert 'step 1: no commit marker' in text and 'left as they are' in text
  assert isinstance(e.value, cli.UserError)


def test_a_pinned_step_is_restored_exactly_or_refused(tmp_path):
  manager = save_steps(tmp_path, [1, 2, 3])
  restored, step, skipped = checkpointing.restore(manager, small_state(0), step=2)
  assert step == 2 and not skipped
  assert_is_step(restored, 2)
  with pytest.raises(ValueError, match=r'Step 7 is not in .*available steps: \[1, 2, 3\]'):
    checkpointing.restore(manager, small_state(0), step=7)
  flip_byte(largest_array_file(tmp_path, 2))
  with pytest.raises(checkpointing.NoCheckpointError, match='step 2: .*checksum'):
    checkpointing.restore(manager, small_state(0), step=2)


# ----------------------------------------------------------------- setting aside


def test_set_aside_steps_are_invisible_to_orbax_and_survive_keep_checkpoints(tmp_path):
  """After step 3 is moved to `unreadable/`, saving steps 3 and 4 with keep=2 deletes
  only good old steps, and the unreadable one is still there, untouched."""
  manager = save_steps(tmp_path, [1, 2, 3], keep=2)
  flip_byte(largest_array_file(tmp_path, 3))
  bad_files = tree_files(step_dir(tmp_path, 3))
  _, step, skipped = checkpointing.restore(manager, small_state(0))
  moved = checkpointing.set_aside(manager, sorted(skipped), checkpointing.UNREADABLE)
  manager.close()
  manager = checkpointing.create_manager(epath.Path(tmp_path), 2)
  assert step == 2 and manager.all_steps() == [2]
  for s in (3, 4):
    checkpointing.save(manager, s, small_state(s))
  assert manager.all_steps() == [3, 4]
  dest = pathlib.Path(moved[3])
  assert dest.parent == tmp_path / 'checkpoints' / 'unreadable'
  assert tree_files(dest) == bad_files
  restored, step, _ = checkpointing.restore(manager, small_state(0))
  assert step == 4
  assert_is_step(restored, 4)


class _Mode:
  """What train._resume reads of a mode (building tiny's real nets takes ~30 s)."""
  checkpoint_upgrades = ()


def resume(workdir, restore_step=None, keep=5):
  """train.py's resume step on `small_state` checkpoints: (state, manager)."""
  config = ml_collections.ConfigDict({'restore_step': restore_step,
                                      'keep_checkpoints': keep})
  manager = checkpointing.create_manager(epath.Path(workdir), keep)
  resume_fn = train._resume  # pylint: disable=protected-access
  return resume_fn(config, epath.Path(workdir), manager, _Mode(), small_state(0))


def test_training_resumes_from_the_newest_good_step_and_moves_the_damaged_one(tmp_path):
  save_steps(tmp_path, [1, 2, 3]).close()
  truncate(largest_array_file(tmp_path, 3))
  state, manager = resume(tmp_path)
  assert_is_step(state, 2)
  assert manager.all_steps() == [1, 2]
  unreadable = list((tmp_path / 'checkpoints' / 'unreadable').iterdir())
  assert len(unreadable) == 1 and unreadable[0].name.startswith('3-')
  checkpointing.save(manager, 3, small_state(3))  # the step is free to be saved again
  assert manager.all_steps() == [1, 2, 3]
  manager.close()


def test_training_from_a_pinned_older_step_moves_the_newer_ones_aside(tmp_path):
  save_steps(tmp_path, [1, 2, 3]).close()
  state, manager = resume(tmp_path, restore_step=1)
  assert_is_step(state, 1)
  assert manager.all_steps() == [1]
  assert sorted(p.name.split('-')[0] for p in
                (tmp_path / 'checkpoints' / 'superseded').iterdir()) == ['2', '3']
  manager.close()


def test_evaluation_reads_the_newest_good_step_and_never_changes_the_workdir(tmp_path):
  """Evaluation (and restore_raw) restore through a read-only manager: the damaged
  step is skipped and stays where it is."""
  save_steps(tmp_path, [1, 2]).close()
  flip_byte(largest_array_file(tmp_path, 2))
  before = tree_files(tmp_path)
  manager = checkpointing.read_only_manager(epath.Path(tmp_path))
  state, step, skipped = checkpointing.restore(manager, small_state(0))
  manager.close()
  assert step == 1 and list(skipped) == [2]
  assert_is_step(state, 1)
  assert int(checkpointing.restore_raw(tmp_path)['step']) == 1
  assert tree_files(tmp_path) == before


# ----------------------------------------------------------------- full disk


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch):
  """ENOSPC injected where orbax writes a step's files: SaveError names the intact
  checkpoint; no step folder is left for the failed save, and step 1 restores."""
  manager = save_steps(tmp_path, [1])
  from orbax.checkpoint._src.path import async_path  # pylint: disable=g-import-not-at-top

  async def full(*args, **kwargs):
    del args, kwargs
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(async_path, 'write_text', full)
  with pytest.raises(checkpointing.SaveError) as e:
    checkpointing.save(manager, 2, small_state(2))
  assert str(e.value).startswith('Saving checkpoint 2 in ')
  assert 'No space left on device' in str(e.value)
  assert 'The latest complete checkpoint (1) is intact' in str(e.value)
  assert len(cli.message(e.value).splitlines()) == 1
  monkeypatch.undo()
  manager.close()
  manager = checkpointing.create_manager(epath.Path(tmp_path), 5)
  restored, step, skipped = checkpointing.restore(manager, small_state(0))
  assert step == 1 and not skipped
  assert_is_step(restored, 1)


def test_the_checksum_file_is_written_atomically_and_lists_every_file(tmp_path):
  save_steps(tmp_path, [1])
  sums = json.loads((step_dir(tmp_path, 1) / checkpointing.CHECKSUMS).read_text())
  files = [f for f in tree_files(step_dir(tmp_path, 1))
           if (step_dir(tmp_path, 1) / f).is_file()]
  assert sorted(sums['sha256']) == sorted(f for f in files if f != checkpointing.CHECKSUMS)
  assert not list(step_dir(tmp_path, 1).glob('*.tmp'))
