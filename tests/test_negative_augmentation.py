"""`config.nda_frac` (docs/algorithm.md §4): negative data augmentation. Off by default;
when on, that fraction of the data batch, part erased by `losses.erase_part`, joins the
samples as negatives of the EBM's loss, and its mean energy is logged as `energy_nda`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hat_ebm_jax import cli, losses, train
from tests import conftest
from tests.conftest import load


def digit_like(n=16, seed=0):
  """`[n, 16, 16, 1]` images in `[-1, 1]`: a bright bar on the background -1."""
  x = -np.ones((n, 16, 16, 1), np.float32)
  x[:, 2:14, 6:10] = np.random.default_rng(seed).uniform(0.5, 1.0, (n, 12, 4, 1))
  return jnp.asarray(x)


def test_erasing_keeps_shape_and_range_and_only_removes_ink():
  x = digit_like()
  e = np.asarray(losses.erase_part(x, jax.random.PRNGKey(0)))
  assert e.shape == x.shape and e.min() >= -1.0 and e.max() <= 1.0
  assert np.all(e <= np.asarray(x) + 1e-6)  # towards the background, never brighter
  ink, left = (np.asarray(x) + 1).sum(axis=(1, 2, 3)), (e + 1).sum(axis=(1, 2, 3))
  assert np.all(left < ink)  # the line crosses the central half: every image loses ink
  assert np.mean(left / ink) < 0.9 and np.any(left > 0.1 * ink)


def test_erasing_is_a_function_of_the_key():
  x = digit_like()
  a, b = (losses.erase_part(x, jax.random.PRNGKey(k)) for k in (0, 0))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, losses.erase_part(x, jax.random.PRNGKey(1)))


def test_the_default_has_no_augmented_negatives():
  (_, _, _, metrics), c = conftest.ebm_step(nda_frac=0.0)
  assert c.nda_frac == 0.0 and 'energy_nda' not in metrics


def test_augmented_negatives_change_the_update_and_are_logged():
  (p0, _, _, m0), c = conftest.ebm_step(nda_frac=0.0)
  (p1, _, _, m1), _ = conftest.ebm_step(nda_frac=0.5)
  assert np.isfinite(float(m1['energy_nda']))
  # The samples' own energy is logged as before; the loss now also has the negatives.
  np.testing.assert_allclose(m1['energy_samples'], m0['energy_samples'], rtol=1e-6)
  assert float(m1['ebm_loss']) != float(m0['ebm_loss'])
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p0),
                                                    jax.tree_util.tree_leaves(p1))]
  assert any(moved)


@pytest.mark.parametrize('value', [-0.1, 1.5])
def test_a_fraction_outside_0_1_is_a_one_line_user_error(tmp_path, value):
  c = load('tiny')
  c.nda_frac = value
  with pytest.raises(cli.UserError, match=f'config.nda_frac must be in \\[0, 1\\]; got {value}'):
    train.build(c, tmp_path / 'w')
  assert not (tmp_path / 'w').exists()
