"""What every training mode shares: the `Mode` protocol, the `TrainState` pytree and the
optimizer plumbing.

Modes are classes (one per `config.mode`, `modes.create`) that subclass `Mode`, the
protocol listing all that the loop (`train.py`), evaluation and the tools may use of a
mode; the optional parts are attributes with defaults, never looked up by `hasattr`. Nets
are built from a config by `models.make_ebm`/`make_generator`/`make_encoder`.
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Protocol, Sequence, Tuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hat_ebm_jax import (checkpointing, langevin, langevin_programs, losses, models, optim,
                         sharding)

Metrics = Dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a run carries from step to step, as one pytree.

  `params`/`opt_state`/`ema` are dicts keyed by trainable net (`ebm`, `gen`, `enc`);
  `batch_stats` holds each net's fixed batch-norm statistics; `frozen` the variables of
  frozen nets (the pretrained generator of joint mode); `bank` the persistent
  `(z, x)` pairs of synthesis; `rng` the run's base key (step `t` uses
  `fold_in(rng, t)`, so a resumed run draws the same numbers).
  """
  step: jax.Array
  params: Dict[str, Any]
  batch_stats: Dict[str, Any]
  frozen: Dict[str, Any]
  opt_state: Dict[str, Any]
  ema: Dict[str, Any]
  bank: Dict[str, Any]
  rng: jax.Array

  @classmethod
  def create(cls, *, variables: Dict[str, Dict], rng: jax.Array,
             txs: Optional[Dict[str, optax.GradientTransformation]] = None,
             frozen: Optional[Dict[str, Any]] = None, bank: Optional[Dict[str, Any]] = None,
             ema: Optional[Dict[str, Any]] = None) -> 'TrainState':
    """The state at step 0.

    `variables`: `{net: {'params', 'batch_stats'?}}` of the trainable nets; `txs`:
    `{net: optimizer}`, whose initial states make `opt_state` (None: no optimizer, as
    for evaluated weights); `frozen`: `{net: variables}` of frozen nets; `bank`:
    synthesis's persistent pairs; `ema`: default a copy of the parameters (its own
    buffers: the training step donates the state); `rng`: the run's base key.
    """
    params = {k: v['params'] for k, v in variables.items()}
    return cls(step=jnp.zeros([], jnp.int32), params=params,
               batch_stats={k: v.get('batch_stats', {}) for k, v in variables.items()},
               frozen=frozen or {},
               opt_state={k: tx.init(params[k]) for k, tx in (txs or {}).items()},
               ema=jax.tree_util.tree_map(jnp.copy, params) if ema is None else ema,
               bank=bank or {}, rng=rng)


class HostPhase(NamedTuple):
  """A training step in two parts: `run(state, batch) -> r` is called outside `jit` on
  concrete arrays (it runs its own compiled programs, e.g. the Langevin loop over
  compiled chunks), then `update(state, batch, r) -> (state, metrics)` is jitted.
  Together they compute `train_step(state, batch)`."""
  run: Callable[[TrainState, jax.Array], Any]
  update: Callable[[TrainState, jax.Array, Any], Tuple[TrainState, Metrics]]


class Mode(Protocol):
  """A training mode: all that the loop and the tools may call. Subclass it.

  Required: `name` (the `config.mode`), `config`, `platform` (the platform its steps
  are compiled for: 'cpu', 'gpu' or 'tpu'), `trainable` (the nets with an optimizer),
  `init_state`, `train_step` (pure; the loop jits it, the state donated) and `sample`.
  Optional, with the defaults below: `checkpoint_upgrades`, the periodic evaluation
  (`eval_every` steps, 0 = none: the mean of `eval_step` over `eval_steps` batches of
  `eval_split`), `bank_size` (synthesis's persistent pairs) and `host_phase`.
  """
  name: str
  config: ml_collections.ConfigDict
  platform: str
  trainable: Tuple[str, ...]
  # How to read this mode's checkpoints of older state layouts (tried when one does
  # not fit `init_state`'s structure).
  checkpoint_upgrades: Sequence[checkpointing.Upgrade] = ()
  eval_every: int = 0
  eval_split: str = 'test'
  eval_steps: int = 0
  bank_size: Optional[int] = None
  # None: the loop jits `train_step` as one program. Else the step split in two, the
  # first part driven from the host (same numbers).
  host_phase: Optional[HostPhase] = None

  def init_state(self, rng: jax.Array) -> TrainState:
    """The state at step 0 (initial nets, optimizer states, bank) from key `rng`."""

  def train_step(self, state: TrainState, batch: jax.Array) -> Tuple[TrainState, Metrics]:
    """One training step on a global data batch -> (state, metrics), `metrics['finite']`
    False when a loss or energy is not finite."""

  def sample(self, state: TrainState, key: jax.Array, n: int,
             batch: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
    """`{name: [n, ...] images}` to plot and save (`batch`: the last data batch)."""

  def eval_step(self, state: TrainState, batch: jax.Array) -> Metrics:
    """Metrics of one batch of `eval_split` (called when `eval_every > 0`)."""
    raise NotImplementedError(f'{self.name} mode has no eval_step (eval_every = 0).')


def step_key(state: TrainState, n: int):
  """`n` keys for this step, independent of how many steps ran in this process."""
  return jax.random.split(jax.random.fold_in(state.rng, state.step), n)


def variables(state: TrainState, name: str, use_ema: bool = False) -> Dict:
  """Flax variables `{'params', 'batch_stats'}` of net `name` (trainable or frozen)."""
  if name in state.frozen:
    return state.frozen[name]
  params = state.ema[name] if use_ema else state.params[name]
  out = {'params': params}
  if state.batch_stats.get(name):
    out['batch_stats'] = state.batch_stats[name]
  return out


def sampler_variables(module, state: TrainState, name: str, use_ema: bool = False) -> Dict:
  """`variables(state, name, use_ema)` as `module` computes with them: conv kernels in its
  dtype (`models.compute_variables`; the same numbers, fewer bytes per Langevin step)."""
  return models.compute_variables(module, variables(state, name, use_ema))


def split_variables(v: Dict) -> Tuple[Any, Any]:
  """`{'params', 'batch_stats'?}` -> (params, batch_stats or {})."""
  return v['params'], v.get('batch_stats', {})


def apply_update(tx: optax.GradientTransformation, grads, opt_state, params, ema,
                 decay: float, step: jax.Array, warmup: bool = True):
  """One optimizer step plus the EMA update (`optim.ema_decay(decay, step, warmup)`,
  `step` = updates already applied). Returns (params, opt_state, ema)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return params, opt_state, optim.ema_update(ema, params,
                                             optim.ema_decay(decay, step, warmup))


def global_norm(tree) -> jax.Array:
  return optax.global_norm(tree)


class HatEBMMode(Mode):
  """Shared pieces of the two Hat EBM modes (synthesis, joint): nets, Langevin, EBM step.

  `platform` ('cpu', 'gpu', 'tpu'; default `jax.default_backend()`) is the platform the
  steps are compiled for: `conv_algorithm='auto'` and `mcmc_unroll='auto'` resolve for
  it (a TPU plan made on a CPU host gets direct convs and the rolled loop).
  """

  def __init__(self, config, platform=None):
    self.config = config
    c = config
    self.platform = platform or jax.default_backend()
    self.ebm = models.make_ebm(c, self.platform)
    self.gen = models.make_generator(c, self.platform)
    self.ebm_tx = optim.make_optimizer(c.ebm_lr_info, c.clip_ebm_grad, c.max_grad_norm)
    self.ebm_lr = optim.step_schedule(c.ebm_lr_info)
    self.sampler = langevin.Settings.from_config(c)
    self.latent_shape = models.latent_shape(self.gen)

  def data_shape(self):
    """Per-sample shape of the data the EBM sees."""
    return models.input_shape(self.ebm, self.config.image_size)

  # The nets as `Partial` pytrees: on concrete arrays, `langevin_programs.sample` then
  # passes the variables to its compiled programs as arguments (compiled once). Their conv
  # kernels are in the nets' compute dtype (`models.compute_variables`): cast here, once,
  # not in every Langevin step.
  def ebm_apply_fn(self, state: TrainState, use_ema: bool = False) -> Callable:
    return langevin.nets(self.ebm, sampler_variables(self.ebm, state, 'ebm', use_ema))

  def gen_apply_fn(self, state: TrainState, use_ema: bool = False) -> Callable:
    return langevin.nets(self.gen, sampler_variables(self.gen, state, 'gen', use_ema))

  def init_chains(self, key, n: int):
    """Langevin starting points (docs/algorithm.md §6 step 1).

    `z = s_z N(0, I)`, `y = s_y N(0, I)`.
    """
    kz, ky = jax.random.split(key)
    c = self.config
    z = c.init_scale_latent * jax.random.normal(kz, (n,) + self.latent_shape)
    y_shape = (n,) + self.data_shape()
    y = (c.init_scale_res * jax.random.normal(ky, y_shape) if c.init_scale_res
         else jnp.zeros(y_shape, jnp.float32))
    return sharding.constrain_batch((z, y))  # chains split over devices

  # A training step is `update_step(state, batch, langevin_step(state, batch))`: traced
  # as one program, or with the Langevin phase driven from the host (`host_phase`).
  num_step_keys = 2  # keys a training step draws (`step_key`); the first is Langevin's

  @property
  def host_phase(self) -> Optional[HostPhase]:
    """`(langevin_step on concrete arrays, update_step)` when the sampler runs from the
    host: on CPU for samplers longer than a chunk (`langevin_programs.runs_on_host`, e.g.
    the 250 steps of refinement), which inside one program would be a while loop,
    several times slower on XLA:CPU (or minutes to compile unrolled). None elsewhere:
    one jitted step."""
    if langevin_programs.runs_on_host(self.sampler, backend=self.platform):
      return HostPhase(functools.partial(self.langevin_step, concrete=True),
                       self.update_step)
    return None

  def langevin_step(self, state: TrainState, batch,
                    concrete: bool = False) -> langevin.LangevinResult:
    """This training step's Langevin run (docs/algorithm.md §6 steps 1-2), one chain per data row.
    `concrete`: called on concrete arrays, outside jit (see `run_langevin`)."""
    return self.run_langevin(state, step_key(state, self.num_step_keys)[0],
                             batch.shape[0], concrete=concrete)

  def train_step(self, state: TrainState, batch):
    """One training step on a data batch -> (state, metrics)."""
    return self.update_step(state, batch, self.langevin_step(state, batch))

  def run_langevin(self, state: TrainState, key, n: int, use_ema: bool = False,
                   sampler=None, concrete: bool = False) -> langevin.LangevinResult:
    """The sampler on `n` fresh chains: traced (inside the caller's jit), or with
    `concrete=True` on concrete arrays as compiled programs (`langevin_programs`)."""
    k_init, k_run = jax.random.split(key)
    z, y = self.init_chains(k_init, n)
    run = langevin_programs.sample if concrete else langevin.sample
    return run(self.ebm_apply_fn(state, use_ema), self.gen_apply_fn(state, use_ema), z, y,
               k_run, self.sampler if sampler is None else sampler, backend=self.platform)

  def ebm_update(self, state: TrainState, data, samples, key):
    """EBM step: `loss = (mean H(data + data_epsilon N) - mean H(samples)) / T`, plus
    `losses.energy_l2_penalty` when `energy_l2 > 0` (metric `ebm_loss` is the first term
    alone, `energy_l2_penalty` the second). With `nda_frac > 0` the first
    `round(nda_frac * B)` data images, part erased (`losses.erase_part`), join the samples
    as negatives (in both terms; metric `energy_nda`)."""
    c = self.config
    x_data = data + c.data_epsilon * jax.random.normal(key, data.shape, data.dtype)
    num_nda = int(round(c.nda_frac * data.shape[0]))
    if num_nda:  # traced only when on: the default's program is unchanged
      x_nda = losses.erase_part(data[:num_nda], jax.random.fold_in(key, 1))
      samples = jnp.concatenate([samples, x_nda])
    bs = state.batch_stats.get('ebm', {})

    def loss_fn(params):
      v = {'params': params, **({'batch_stats': bs} if bs else {})}
      e_data = self.ebm.apply(v, x_data)
      e_samples = self.ebm.apply(v, samples)
      loss = total = losses.ebm_loss(e_data, e_samples, c.mcmc_temp)
      extras = {}  # the optional terms' metrics
      if c.energy_l2:  # traced only when on: the default's program is unchanged
        extras['energy_l2_penalty'] = losses.energy_l2_penalty(e_data, e_samples,
                                                               c.mcmc_temp, c.energy_l2)
        total = loss + extras['energy_l2_penalty']
      if num_nda:
        extras['energy_nda'] = jnp.mean(e_samples[-num_nda:])
        e_samples = e_samples[:-num_nda]
      return total, (loss, extras, jnp.mean(e_data), jnp.mean(e_samples))

    (_, (loss, extras, e_data, e_samples)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params['ebm'])
    params, opt_state, ema = apply_update(self.ebm_tx, grads, state.opt_state['ebm'],
                                          state.params['ebm'], state.ema['ebm'],
                                          c.ebm_opt_decay, state.step, c.ema_warmup)
    metrics = dict(ebm_loss=loss, energy_data=e_data, energy_samples=e_samples,
                   ebm_grad_norm=global_norm(grads), lr_ebm=self.ebm_lr(state.step),
                   **extras)
    return params, opt_state, ema, metrics

  def langevin_metrics(self, r: langevin.LangevinResult) -> Metrics:
    """The sampler's diagnostics: both gradient norms and the mean latent norm."""
    n = r.z.shape[0]
    return dict(grad_norm_latent=r.grad_norm_latent, grad_norm_res=r.grad_norm_res,
                z_norm=jnp.mean(jnp.sqrt(jnp.sum(jnp.square(r.z.reshape(n, -1)), axis=1))))

  def sample(self, state: TrainState, key, n: int, batch=None,
             use_ema: Optional[bool] = None,
             with_chains: bool = False) -> Dict[str, jax.Array]:
    """`{'hat': G(z) + y, 'gen': G(z_init)}` for `n` fresh chains (same latents), with
    the EMA weights if `use_ema` (None: `config.use_ema`); `with_chains` adds the chains'
    end states `'z'`, `'y'` (to continue them: `long_run.continue_chains`)."""
    del batch
    use_ema = self.config.use_ema if use_ema is None else use_ema
    r = self.run_langevin(state, key, n, use_ema=use_ema)
    z0, y0 = self.init_chains(jax.random.split(key)[0], n)
    del z0
    out = {'hat': r.images, 'gen': r.images_init - y0}
    if with_chains:
      out.update(z=r.z, y=r.y)
    return out


def finite(*xs) -> jax.Array:
  """True when every array in `xs` is finite everywhere."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs]))
