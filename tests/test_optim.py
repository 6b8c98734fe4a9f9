"""Optimisation of docs/algorithm.md §5: Keras Adam, per-tensor clipping, step schedule, EMA.

Conformance: two EBM updates (loss, per-tensor clip, Adam) and two cooperative generator
updates of the original are reproduced from the same starting checkpoints.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hat_ebm_jax import losses, optim

# ---------------------------------------------------------------------------------------
# Conformance with the original
# ---------------------------------------------------------------------------------------

LOSS_RTOL = 1e-5
WEIGHT_RTOL = 5e-3  # per tensor: max |our change - ref change| <= 5e-3 max |ref change|


def _two_updates(loss_fn, params, tx):
  """Two optimiser steps from `params`; returns the losses and the final params."""

  @jax.jit
  def step(p, state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, state = tx.update(grads, state, p)
    return loss, optax.apply_updates(p, updates), state

  state, out = tx.init(params), []
  for _ in range(2):
    loss, params, state = step(params, state)
    out.append(float(loss))
  return out, params


def _worst_weight_error(start, ours, ref):
  """max over tensors of max |our change - ref change| / max |ref change|."""
  f0, f1, f2 = (flax.traverse_util.flatten_dict(t) for t in (start, ours, ref))
  assert set(f0) == set(f1) == set(f2)
  worst = 0.0
  for k in f0:
    ref_change = np.asarray(f2[k]) - np.asarray(f0[k])
    err = np.abs((np.asarray(f1[k]) - np.asarray(f0[k])) - ref_change).max()
    worst = max(worst, err / np.abs(ref_change).max())
  return worst


def _loss_errors(ours, ref):
  return [abs(a - b) / abs(b) for a, b in zip(ours, ref)]


def test_two_ebm_updates_reproduce_original(ref_net, ref_dir, manifest):
  """EBM loss (mean H(data) - mean H(samples)) / T, per-tensor clip at max_grad_norm and
  Keras Adam (lr 1e-4) give the original's two losses and weights after step 2."""
  updates = np.load(ref_dir / 'updates.npz')
  config = manifest['_updates']['ebm']['config']
  ebm, start = ref_net('ebm_sngan32')
  _, after = ref_net('ebm_sngan32', 'ebm_after_2_updates')
  assert config['clip_ebm_grad']
  tx = optim.make_optimizer([[1e-4, 0]], clip_grad=True,
                            max_grad_norm=config['max_grad_norm'])

  def loss_fn(p):
    return losses.ebm_loss(ebm.apply({'params': p}, updates['data']),
                           ebm.apply({'params': p}, updates['samples']),
                           config['mcmc_temp'])

  ours, params = _two_updates(loss_fn, start['params'], tx)
  loss_err = _loss_errors(ours, updates['ebm_losses'])
  weight_err = _worst_weight_error(start['params'], params, after['params'])
  print(f'\n[conformance] EBM updates: loss rel err {max(loss_err):.3g}, '
        f'worst weight-change err {weight_err:.3g}')
  assert max(loss_err) <= LOSS_RTOL
  assert weight_err <= WEIGHT_RTOL


def test_two_generator_updates_reproduce_original(ref_net, ref_dir, manifest):
  """Cooperative loss factor * mean((G(z) - x)^2) with Keras Adam (lr 1e-4, no clip)
  gives the original's two losses and weights after step 2; BN moving statistics stay."""
  updates = np.load(ref_dir / 'updates.npz')
  factor = manifest['_updates']['gen']['config']['gen_loss_factor_coop']
  gen, start = ref_net('gen_sngan32')
  _, after = ref_net('gen_sngan32', 'gen_after_2_updates')
  tx = optim.make_optimizer([[1e-4, 0]])

  def loss_fn(p):
    images = gen.apply({'params': p, 'batch_stats': start['batch_stats']},
                       updates['gen_latents'])
    return losses.gen_coop_loss(images, updates['samples'], factor)

  ours, params = _two_updates(loss_fn, start['params'], tx)
  loss_err = _loss_errors(ours, updates['gen_losses'])
  weight_err = _worst_weight_error(start['params'], params, after['params'])
  print(f'\n[conformance] generator updates: loss rel err {max(loss_err):.3g}, '
        f'worst weight-change err {weight_err:.3g}')
  assert max(loss_err) <= LOSS_RTOL
  assert weight_err <= WEIGHT_RTOL
  # Inference-mode BN: the original never changed the moving statistics.
  for a, b in zip(jax.tree_util.tree_leaves(start['batch_stats']),
                  jax.tree_util.tree_leaves(after['batch_stats'])):
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------
# Keras Adam
# ---------------------------------------------------------------------------------------

P0 = np.array([0.5, -1.0, 2.0, 0.1], np.float32)
GRADS = [np.array([0.3, -1e-9, 2.0, 1e-8], np.float32),
         np.array([0.1, 2e-9, -1.0, 1e-8], np.float32)]
TINY = np.array([False, True, False, True])


def keras_adam_numpy(grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
  """docs/algorithm.md §5 by hand in float64: the updates of steps t = 1, 2, ..."""
  m = v = np.zeros_like(grads[0], np.float64)
  out = []
  for t, g in enumerate(grads, start=1):
    g = g.astype(np.float64)
    m = m + (1 - b1) * (g - m)
    v = v + (1 - b2) * (g ** 2 - v)
    out.append(-lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps))
  return out


def _updates(tx, grads, params=P0):
  state, out = tx.init(jnp.asarray(params)), []
  for g in grads:
    u, state = tx.update(jnp.asarray(g), state, jnp.asarray(params))
    out.append(np.asarray(u))
  return out


def test_keras_adam_follows_the_keras_formula():
  """Two steps equal m/(sqrt(v) + eps) scaled by lr sqrt(1-b2^t)/(1-b1^t), computed by
  hand, for large and tiny gradients alike."""
  for got, want in zip(_updates(optim.keras_adam(1e-3), GRADS), keras_adam_numpy(GRADS)):
    np.testing.assert_allclose(got, want, rtol=5e-5)


def test_keras_adam_differs_from_optax_adam_where_gradients_are_tiny():
  """optax.adam(eps=1e-7) adds eps after bias-correcting v: the same for large gradients,
  many times larger steps for gradients near eps."""
  keras = _updates(optim.keras_adam(1e-3), GRADS)
  plain = _updates(optax.adam(1e-3, eps=1e-7), GRADS)
  for k, o in zip(keras, plain):
    np.testing.assert_allclose(k[~TINY], o[~TINY], rtol=1e-3)
    assert np.all(np.abs(o[TINY]) > 5 * np.abs(k[TINY]))


def test_keras_adam_evaluates_a_schedule_at_the_number_of_updates_done():
  """The first update uses lr(0), the second lr(1)."""
  tx = optim.keras_adam(optim.step_schedule([[1e-3, 0], [1e-4, 1]]))
  ones = [np.ones(4, np.float32)] * 2
  got = _updates(tx, ones)
  want_1 = keras_adam_numpy(ones, lr=1e-3)[0]
  want_2 = keras_adam_numpy(ones, lr=1e-4)[1]
  np.testing.assert_allclose(got[0], want_1, rtol=5e-5)
  np.testing.assert_allclose(got[1], want_2, rtol=5e-5)


def test_keras_adam_state_counts_steps():
  tx = optim.keras_adam(1e-3)
  state = tx.init({'w': jnp.zeros(3)})
  for _ in range(3):
    _, state = tx.update({'w': jnp.ones(3)}, state)
  assert int(state.count) == 3


# ---------------------------------------------------------------------------------------
# Clipping, schedule, EMA
# ---------------------------------------------------------------------------------------

def test_clip_by_norm_per_tensor_clips_each_tensor_on_its_own():
  """A tensor over the norm is scaled to it; a tensor under it is untouched (a global-norm
  clip would scale it too)."""
  grads = {'big': jnp.array([3.0, 4.0]), 'small': jnp.array([0.3, 0.4]),
           'matrix': jnp.full((2, 2), 2.0)}
  clipped, _ = optim.clip_by_norm_per_tensor(1.0).update(grads, optax.EmptyState())
  np.testing.assert_allclose(clipped['big'], [0.6, 0.8], rtol=1e-6)
  np.testing.assert_allclose(clipped['small'], [0.3, 0.4], rtol=1e-6)
  np.testing.assert_allclose(clipped['matrix'], np.full((2, 2), 0.5), rtol=1e-6)


def test_make_optimizer_clips_before_adam():
  """With clip_grad the chain is per-tensor clip, then Keras Adam."""
  g = {'w': jnp.array([30.0, 40.0])}
  params = {'w': jnp.zeros(2)}
  tx = optim.make_optimizer([[1e-3, 0]], clip_grad=True, max_grad_norm=1.0)
  ref = optim.keras_adam(1e-3)
  got, _ = tx.update(g, tx.init(params), params)
  want, _ = ref.update({'w': jnp.array([0.6, 0.8])}, ref.init(params), params)
  np.testing.assert_allclose(got['w'], want['w'], rtol=1e-6)


@pytest.mark.parametrize('step,lr', [(0, 1e-4), (9, 1e-4), (10, 1e-5), (11, 1e-5),
                                     (10 ** 6, 1e-5)])
def test_step_schedule_switches_at_the_first_step_of_an_entry(step, lr):
  """[[1e-4, 0], [1e-5, 10]]: 1e-4 for steps 0..9, 1e-5 from step 10 on."""
  sched = optim.step_schedule([[1e-4, 0], [1e-5, 10]])
  np.testing.assert_allclose(float(sched(jnp.asarray(step))), lr, rtol=1e-6)


def test_step_schedule_with_imagenet_decays():
  """The ImageNet schedule: 1e-4, 1e-5 from 230k, 1e-6 from 260k."""
  sched = optim.step_schedule([[1e-4, 0], [1e-5, 230000], [1e-6, 260000]])
  got = [float(sched(jnp.asarray(s))) for s in (229999, 230000, 259999, 260000)]
  np.testing.assert_allclose(got, [1e-4, 1e-5, 1e-5, 1e-6], rtol=1e-6)


@pytest.mark.parametrize('lr_info,message', [
    ([[1e-4, 5]], 'start at step 0'),
    ([[1e-4, 0], [1e-5, 10], [1e-6, 10]], 'strictly increase'),
    ([[1e-4, 0], [1e-5, 10], [1e-6, 5]], 'strictly increase'),
    ([], 'empty'),
    ([[0.0, 0]], 'lr > 0'),
    ([[1e-4]], 'lr > 0, first_step'),
])
def test_check_lr_info_rejects_malformed_schedules(lr_info, message):
  with pytest.raises(ValueError, match=message):
    optim.check_lr_info(lr_info)


def test_check_lr_info_accepts_a_valid_schedule():
  optim.check_lr_info([[1e-4, 0], [1e-5, 230000], [1e-6, 260000]])


def test_ema_update_formula():
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
  ema = {'a': jnp.array(1.0), 'b': jnp.array([2.0, 4.0])}
  params = {'a': jnp.array(3.0), 'b': jnp.array([0.0, 0.0])}
  out = optim.ema_update(ema, params, 0.9)
  np.testing.assert_allclose(out['a'], 1.2, rtol=1e-6)
  np.testing.assert_allclose(out['b'], [1.8, 3.6], rtol=1e-6)


def test_ema_decay_warms_up_to_the_configured_decay():
  """With warm-up the decay is min(decay, (1 + t) / (10 + t)) after t updates: 0.1 at the
  first update, 0.9999 reached after 89,990; without it, the fixed decay."""
  steps = jnp.array([0, 1, 1490, 89990, 10**6])
  got = optim.ema_decay(0.9999, steps)
  want = np.minimum(0.9999, (1.0 + np.asarray(steps)) / (10.0 + np.asarray(steps)))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(optim.ema_decay(0.9999, steps[0], warmup=False)) == np.float32(0.9999)


def test_ema_of_a_short_run_forgets_the_initial_weights():
  """After 1,500 updates towards params = 1 from ema = 0, the warm-up EMA holds under 1%
  of the initial weights; the fixed 0.9999 decay still holds 86%."""
  def run(warmup):
    ema = jnp.zeros(())
    for t in range(1500):
      ema = optim.ema_update(ema, jnp.ones(()), optim.ema_decay(0.9999, t, warmup))
    return 1.0 - float(ema)
  assert run(True) < 0.01
  assert 0.85 < run(False) < 0.87
