"""The persistent bank of synthesis mode (docs/algorithm.md §6 steps 4-5) and its `fresh` pairs.

A new bank is `(z, G(z))` under the initial generator, so the generator's regression onto
it is zero in exact arithmetic. Computed, it is rounding noise, which Adam would turn into
a step of size lr in a random direction; the bank marks such pairs `fresh` and their
residual is exactly zero, so the generator moves only once it draws a written pair.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from hat_ebm_jax import checkpointing, modes, train
from hat_ebm_jax.modes import base, synthesis
from tests.conftest import load


@pytest.fixture(scope='module')
def setup():
  c = load('tiny', 'synthesis')
  c.mcmc_steps = 2
  mode = modes.create(c)
  state = mode.init_state(jax.random.PRNGKey(0))
  batch = jax.random.uniform(jax.random.PRNGKey(1), (c.batch_size, 16, 16, 1),
                             minval=-1.0, maxval=1.0)
  return c, mode, state, batch, jax.jit(mode.train_step)


def drawn_indices(mode, state):
  """The bank indices a synthesis step at `state` regresses on (its third key)."""
  k_idx = base.step_key(state, mode.num_step_keys)[2]
  return np.asarray(jax.random.choice(k_idx, mode.bank_size, (mode.config.batch_size,),
                                      replace=False))


def tree_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a),
                                                 jax.tree_util.tree_leaves(b)))


def test_a_new_bank_holds_fresh_pairs_of_the_initial_generator(setup):
  c, mode, state, _, _ = setup
  assert state.bank['z'].shape == (c.persistent_size, c.z_sz)
  assert state.bank['fresh'].dtype == jnp.bool_ and bool(jnp.all(state.bank['fresh']))
  g = mode.gen.apply(base.variables(state, 'gen'), state.bank['z'])
  np.testing.assert_allclose(state.bank['x'], g, atol=1e-6)


def test_the_generator_stays_put_while_it_draws_only_fresh_pairs(setup):
  """Step 0: loss exactly 0, generator bitwise unchanged; the drawn pairs are overwritten
  with this step's `(z, x)` and are no longer fresh, the others still are."""
  _, mode, state, batch, step = setup
  idx = drawn_indices(mode, state)
  new, metrics = step(state, batch)
  assert float(metrics['gen_loss']) == 0.0
  assert tree_equal(new.params['gen'], state.params['gen'])
  assert not tree_equal(new.params['ebm'], state.params['ebm'])  # the EBM did learn
  fresh = np.asarray(new.bank['fresh'])
  assert not fresh[idx].any() and fresh.sum() == mode.bank_size - len(idx)
  assert not np.array_equal(new.bank['x'][idx], state.bank['x'][idx])


def test_drawing_a_written_pair_moves_the_generator_and_ends_freshness(setup):
  """One drawn pair that is not fresh: the loss is docs/algorithm.md §4's
  `factor * mean((G(z_bank) - x_bank)^2)` with the fresh residuals exactly zero, the
  generator takes a step, and after it no pair is fresh."""
  c, mode, state, batch, step = setup
  state = state.replace(step=jnp.asarray(7, jnp.int32))
  idx = drawn_indices(mode, state)
  written = idx[3]
  x = state.bank['x'].at[written].add(0.1)  # as if this step's samples had been written
  state = state.replace(bank=dict(state.bank, x=x,
                                  fresh=state.bank['fresh'].at[written].set(False)))
  new, metrics = step(state, batch)
  g = mode.gen.apply(base.variables(state, 'gen'), state.bank['z'][written][None])[0]
  want = c.gen_loss_factor_coop * np.sum((g - x[written]) ** 2) / np.prod(
      (c.batch_size,) + x.shape[1:])
  np.testing.assert_allclose(float(metrics['gen_loss']), want, rtol=1e-4)
  assert not tree_equal(new.params['gen'], state.params['gen'])
  assert not np.asarray(new.bank['fresh']).any()


def test_a_checkpoint_from_before_fresh_marks_resumes_with_no_pair_fresh(tmp_path):
  """A workdir written by the version without `bank['fresh']` (95cbd90) still resumes:
  its generator had already moved, so every pair is marked stale; the rest is restored
  as saved, and nothing on disk changes."""
  c = load('tiny', 'synthesis')
  mode = modes.create(c)
  old = synthesis.BANK_WITHOUT_FRESH.older(mode.init_state(jax.random.PRNGKey(5)))
  old = old.replace(step=jnp.asarray(3, jnp.int32))
  assert 'fresh' not in old.bank
  manager = checkpointing.create_manager(epath.Path(tmp_path), keep=2)
  checkpointing.save(manager, 3, old)
  files = sorted(str(p) for p in (tmp_path / 'checkpoints').rglob('*'))

  _, _, state, _, _ = train.build(c, epath.Path(tmp_path))
  assert int(state.step) == 3
  assert tree_equal(state.params, old.params)
  assert tree_equal((state.bank['z'], state.bank['x']), (old.bank['z'], old.bank['x']))
  assert state.bank['fresh'].dtype == jnp.bool_ and not np.asarray(state.bank['fresh']).any()
  assert sorted(str(p) for p in (tmp_path / 'checkpoints').rglob('*')) == files
  # Without the upgrade such a checkpoint does not fit today's state.
  with pytest.raises(ValueError, match='does not fit'):
    checkpointing.restore(manager, mode.init_state(jax.random.PRNGKey(0)))
