"""What the planner compiles: training's step (`train.make_train_step`) or evaluation's
sampler (`evaluate.sample_batches`) on abstract inputs (`jax.eval_shape`, training's
shardings), and one sampler loop body apart (its FLOPs are added `num_loop_bodies - 1`
more times, since the compiled step counts a rolled loop's body once)."""

import dataclasses
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from hat_ebm_jax import config_lib, langevin, models, modes, sharding
from hat_ebm_jax.modes import base
from hat_ebm_jax.plan import topology

def _structs(tree, shardings):
  return jax.tree_util.tree_map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), tree, shardings)


def abstract_gen_variables(config, platform: str):
  """The generator's variables as `ShapeDtypeStruct`s (joint mode's frozen net)."""
  gen = models.make_generator(config, platform)
  return jax.eval_shape(lambda k: models.init_variables(gen, k, config.image_size),
                        jax.random.PRNGKey(0))


def build_mode(config, platform: str):
  """`modes.create` for `platform`, with abstract generator variables in joint mode."""
  gen_v = abstract_gen_variables(config, platform) if config.mode == 'joint' else None
  return modes.create(config, platform=platform, gen_variables=gen_v)


def abstract_state(mode, mesh):
  """`jax.eval_shape(mode.init_state)` as `ShapeDtypeStruct`s with training's shardings.
  Returns `(state, state_shardings)`."""
  state = jax.eval_shape(mode.init_state, jax.random.PRNGKey(0))
  state_sh = sharding.state_shardings(state, mesh)
  return _structs(state, state_sh), state_sh


@dataclasses.dataclass
class Programs:
  """What to compile: the step, one sampler loop body, and how often that body runs."""
  what: str
  step: Any  # a function with .lower(*args)
  step_args: Tuple
  body: Optional[Any]
  body_args: Tuple
  loop_bodies: int  # loop bodies per step (0: no sampler)
  steps_per_run: int
  batch: int


def _body_program(mode, state, mesh, n: int, use_ema: bool = False):
  """One sampler loop body (`langevin.loop_body`) on one device's share of `n` chains.

  Compiled for the slice's first device alone, with its `n / D` chains: the per-device
  FLOPs and bytes are those of the body inside the `D`-device step (all its work is
  along the chains; its one collective, the mean of a diagnostic norm, adds no FLOPs),
  and the compile skips SPMD partitioning (about 10% less compile time; the figures
  agree to 1e-6 on a narrow `cifar10_synth`, `tests/test_plan.py`). The mesh is `data`
  only (`sharding.create_mesh`); a `model` axis would need the whole mesh here.
  """
  one = sharding.create_mesh(list(mesh.devices.flat)[:1])
  rep = sharding.replicated(one)

  def local(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), tree)

  ebm_v = local(_variables(mode, state, 'ebm', use_ema))
  gen_v = local(_variables(mode, state, 'gen', use_ema))
  d = sharding.data_size(mesh)
  n_local = n // d if n % d == 0 else n  # `sharding.sample_sharding`: else replicated
  z = jax.ShapeDtypeStruct((n_local,) + mode.latent_shape, jnp.float32, sharding=rep)
  y = jax.ShapeDtypeStruct((n_local,) + mode.data_shape(), jnp.float32, sharding=rep)
  key = local(jax.eval_shape(lambda: jax.random.PRNGKey(0)))

  def body(ebm_v, gen_v, z, y, x_gen, key):
    return langevin.loop_body(mode.sampler, langevin.nets(mode.ebm, ebm_v),
                              langevin.nets(mode.gen, gen_v), z, y, x_gen, key)

  return sharding.jit(body, one), (ebm_v, gen_v, z, y, y, key)


def _variables(mode, state, name, use_ema):
  """The variables the sampler's loop reads (`base.sampler_variables`: conv kernels
  already in the nets' dtype, cast once before the loop), as abstract arrays."""
  module = mode.ebm if name == 'ebm' else mode.gen
  return jax.eval_shape(
      lambda s: base.sampler_variables(module, s, name, use_ema), state)


def train_programs(config, mesh, platform: str = 'tpu') -> Programs:
  """The training step `train.make_train_step` builds, on abstract inputs."""
  from hat_ebm_jax import train  # pylint: disable=g-import-not-at-top
  if config.mode == 'evaluate':
    raise topology.PlanError(f'config.mode is {config.mode!r}: plan an evaluation config with '
                    '--what=eval, or a training config with --what=train.')
  _validate(config)
  sharding.check_batch_divides(config.batch_size, mesh)
  mode = build_mode(config, platform)
  state, state_sh = abstract_state(mode, mesh)
  batch_sh = sharding.batch_sharded(mesh)
  batch = jax.ShapeDtypeStruct((config.batch_size,) + _data_shape(mode, config),
                               jnp.float32, sharding=batch_sh)
  if mode.host_phase is not None:
    raise RuntimeError(f'The training step for {platform} runs from the host; plan a '
                       'device platform.')
  step = train.make_train_step(mode, mesh, state_sh, batch_sh)
  body, body_args, bodies = None, (), 0
  if isinstance(mode, base.HatEBMMode):  # a Langevin sampler in the step
    bodies = langevin.num_loop_bodies(mode.sampler)
    body, body_args = _body_program(mode, state, mesh, config.batch_size)
  return Programs('train', step, (state, batch), body, body_args, bodies,
                  int(config.num_training_steps), int(config.batch_size))


def _validate(config) -> None:
  """`config_lib.validate`, except that joint mode needs no `gen_weights` here (its
  generator is abstract)."""
  if config.mode == 'joint' and not config.gen_weights:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.gen_weights = '(abstract)'
  config_lib.validate(config)


def _data_shape(mode, config):
  if isinstance(mode, base.HatEBMMode):
    return tuple(mode.data_shape())
  return (config.image_size, config.image_size, config.nch)


def eval_programs(config, mesh, platform: str = 'tpu') -> Programs:
  """The evaluation sampler `evaluate.sample_batches` runs, on abstract inputs."""
  from hat_ebm_jax import evaluate  # pylint: disable=g-import-not-at-top
  if config.mode != 'evaluate':
    raise topology.PlanError(f'--what=eval plans an evaluation config (config.mode=evaluate, '
                    f'e.g. configs/cifar10_synth.py:eval); this one has mode '
                    f'{config.mode!r}.')
  config_lib.validate(config)
  evaluate.check_config(config, sharding.data_size(mesh))
  train_cfg = evaluate.training_config(config, None)
  mode = build_mode(train_cfg, platform)
  state, state_sh = abstract_state(mode, mesh)
  n = int(config.eval_batch_size)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
  step = sharding.jit(lambda s, k: mode.sample(s, k, n), mesh,
                      in_shardings=(state_sh, sharding.replicated(mesh)),
                      out_shardings=sharding.batch_sharded(mesh))
  body, body_args = _body_program(mode, state, mesh, n, bool(config.use_ema))
  batches = max(int(config.num_eval_samples) // n, 1)
  return Programs('eval', step, (state, key), body, body_args,
                  langevin.num_loop_bodies(mode.sampler), batches, n)
