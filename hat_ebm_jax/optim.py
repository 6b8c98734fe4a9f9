"""Optimisation pieces of docs/algorithm.md §5 as optax transformations.

- `keras_adam`: Adam in the Keras form (eps added to `sqrt(v)` *before* bias correction of
  the step), which `optax.adam(eps=1e-7)` is not.
- `clip_by_norm_per_tensor`: TF `clip_by_norm` on each gradient tensor separately.
- `step_schedule`: `lr_info = ((lr, first_step), ...)` as an optax schedule.
- `ema_decay`, `ema_update`: the weight moving average (`*_opt_decay`, with a warm-up).
"""

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax


class KerasAdamState(NamedTuple):
  count: jax.Array
  mu: optax.Updates
  nu: optax.Updates


def keras_adam(learning_rate: optax.ScalarOrSchedule, b1: float = 0.9,
               b2: float = 0.999, eps: float = 1e-7) -> optax.GradientTransformation:
  """Keras Adam: at step `t = 1, 2, ...`

  `m += (1-b1)(g-m)`, `v += (1-b2)(g^2-v)`,
  `update = -lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps)`.
  A schedule is evaluated at `t - 1` (the number of updates already applied).
  """

  def init_fn(params):
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    return KerasAdamState(count=jnp.zeros([], jnp.int32), mu=zeros,
                          nu=jax.tree_util.tree_map(jnp.zeros_like, params))

  def update_fn(updates, state, params=None):
    del params
    lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
    t = (state.count + 1).astype(jnp.float32)
    mu = jax.tree_util.tree_map(lambda m, g: m + (1 - b1) * (g - m), state.mu, updates)
    nu = jax.tree_util.tree_map(lambda v, g: v + (1 - b2) * (jnp.square(g) - v),
                                state.nu, updates)
    alpha = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    new_updates = jax.tree_util.tree_map(
        lambda m, v: -alpha * m / (jnp.sqrt(v) + eps), mu, nu)
    return new_updates, KerasAdamState(count=state.count + 1, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def clip_by_norm_per_tensor(max_norm: float) -> optax.GradientTransformation:
  """Clips each gradient tensor to L2 norm `max_norm` on its own (TF `clip_by_norm`)."""

  def update_fn(updates, state, params=None):
    del params

    def clip(g):
      norm = jnp.sqrt(jnp.sum(jnp.square(g)))
      return g * (max_norm / jnp.maximum(norm, max_norm))

    return jax.tree_util.tree_map(clip, updates), state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


def check_lr_info(lr_info: Sequence[Sequence[float]], name: str = 'lr_info') -> None:
  """Raises ValueError unless `lr_info` is `((lr, 0), (lr, step), ...)`, steps rising."""
  if not lr_info:
    raise ValueError(f'{name} is empty; give ((lr, 0), ...).')
  steps = []
  for entry in lr_info:
    if len(entry) != 2 or not float(entry[0]) > 0:
      raise ValueError(f'{name} entries must be (lr > 0, first_step); got {entry!r}.')
    steps.append(int(entry[1]))
  if steps[0] != 0:
    raise ValueError(f'{name} must start at step 0 (its first entry is '
                     f'{tuple(lr_info[0])!r}); e.g. ((1e-4, 0), (1e-5, 230000)).')
  if any(b <= a for a, b in zip(steps, steps[1:])):
    raise ValueError(f'{name} steps must strictly increase; got {steps}.')


def step_schedule(lr_info: Sequence[Sequence[float]]) -> optax.Schedule:
  """`((lr, first_step), ...)` -> schedule giving the lr of the last entry started."""
  check_lr_info(lr_info)
  lrs = jnp.asarray([float(e[0]) for e in lr_info], jnp.float32)
  starts = jnp.asarray([int(e[1]) for e in lr_info], jnp.int32)

  def schedule(count):
    idx = jnp.sum(count >= starts) - 1
    return lrs[idx]

  return schedule


def make_optimizer(lr_info, clip_grad: bool = False, max_grad_norm: float = 50.0,
                   b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-7) -> optax.GradientTransformation:
  """Optional per-tensor clipping followed by Keras Adam on the step schedule."""
  adam = keras_adam(step_schedule(lr_info), b1=b1, b2=b2, eps=eps)
  if clip_grad:
    return optax.chain(clip_by_norm_per_tensor(max_grad_norm), adam)
  return adam


def ema_decay(decay: float, step: jax.Array, warmup: bool = True) -> jax.Array:
  """The EMA decay of the update that follows `step` updates (`step = 0, 1, ...`).

  With `warmup`, `min(decay, (1 + step) / (10 + step))` (the `num_updates` form of TF's
  `ExponentialMovingAverage`): the average forgets the initial weights within a run of any
  length (0.9999 fixed still holds 0.9999^1500 = 86% of them after 1,500 steps) and
  reaches `decay` after `9 / (1 - decay) - 10` steps (89,990 at 0.9999). Without it, the
  authors' fixed `decay`.
  """
  decay = jnp.asarray(decay, jnp.float32)
  if not warmup:
    return decay
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema, params, decay):
  """`ema <- decay * ema + (1 - decay) * params`, leaf by leaf."""
  return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
