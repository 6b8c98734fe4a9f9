"""`train.make_train_step`: on CPU a sampler longer than a chunk runs from the host
(`langevin_step` on concrete arrays, then the jitted `update_step`); it computes the
step that the single jitted `train_step` computes."""

import dataclasses
import os

import jax
import numpy as np
import pytest

from hat_ebm_jax import config_lib, langevin_programs, models, modes, sharding, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mode_and_state(mode_name, **changes):
  c = config_lib.load_config_file(os.path.join(REPO, 'configs', 'tiny.py'))
  c.mode = mode_name
  for k, v in changes.items():
    setattr(c, k, v)
  gen_v = None
  if mode_name == 'joint':  # a random generator in place of a pretrained one
    gen_v = models.init_variables(models.make_generator(c), jax.random.PRNGKey(7),
                                  c.image_size)
  m = modes.create(c, gen_variables=gen_v)
  state = m.init_state(jax.random.PRNGKey(0))
  batch = jax.random.uniform(jax.random.PRNGKey(1),
                             (c.batch_size, c.image_size, c.image_size, c.nch),
                             minval=-1, maxval=1)
  return m, state, batch


# Both modes go through the same `train.make_train_step` host path; joint adds latent moves,
# which test_langevin_programs checks in the host loop.
@pytest.mark.parametrize('mode_name', ['synthesis',
                                       pytest.param('joint', marks=pytest.mark.slow)])
def test_host_driven_langevin_step_equals_one_jitted_step(mode_name):
  if jax.default_backend() != 'cpu':
    pytest.skip('the host-driven layout is the CPU one')
  m, state, batch = _mode_and_state(mode_name, mcmc_steps=5, mcmc_unroll='2')
  assert langevin_programs.runs_on_host(m.sampler) and m.host_phase is not None
  mesh = sharding.create_mesh(jax.devices()[:1])
  state_sh = sharding.state_shardings(state, mesh)
  step = train.make_train_step(m, mesh, state_sh, sharding.batch_sharded(mesh))
  want_state, want = jax.jit(m.train_step)(state, batch)
  want_state, want = jax.device_get((want_state, want))
  got_state, got = step(jax.device_put(state, state_sh), batch)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree_util.tree_leaves(got_state.params),
                  jax.tree_util.tree_leaves(want_state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert int(got_state.step) == 1


def test_short_samplers_stay_inside_the_jitted_step():
  m, _, _ = _mode_and_state('synthesis')
  assert not langevin_programs.runs_on_host(m.sampler)  # tiny: 3 steps, fully unrolled
  assert m.host_phase is None
  long = dataclasses.replace(m.sampler, mcmc_steps=250)
  assert langevin_programs.runs_on_host(long, backend='cpu')
  assert not langevin_programs.runs_on_host(long, backend='gpu')
