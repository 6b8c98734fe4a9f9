"""`config.energy_l2` (docs/algorithm.md §4): off by default, and when on it adds
`losses.energy_l2_penalty` to the EBM step's loss, logged beside the contrastive
`ebm_loss`, which it leaves as it was."""

import jax
import numpy as np
import pytest

from hat_ebm_jax import cli, train
from tests import conftest
from tests.conftest import load


def test_the_default_has_no_penalty_and_logs_none():
  (_, _, _, metrics), c = conftest.ebm_step(energy_l2=0.0)
  assert c.energy_l2 == 0.0 and 'energy_l2_penalty' not in metrics


def test_a_penalty_changes_the_update_but_not_the_logged_contrastive_loss():
  (p0, _, _, m0), c = conftest.ebm_step(energy_l2=0.0)
  (p1, _, _, m1), _ = conftest.ebm_step(energy_l2=1e-6)
  np.testing.assert_allclose(m1['ebm_loss'], m0['ebm_loss'], rtol=1e-6)
  assert float(m1['energy_l2_penalty']) > 0
  moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(p0),
                                                    jax.tree_util.tree_leaves(p1))]
  assert any(moved)


def test_a_negative_penalty_is_a_one_line_user_error(tmp_path):
  c = load('tiny')
  c.energy_l2 = -1.0
  with pytest.raises(cli.UserError, match='config.energy_l2 must be >= 0; got -1.0'):
    train.build(c, tmp_path / 'w')
  assert not (tmp_path / 'w').exists()
