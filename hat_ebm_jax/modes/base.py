"""What every training mode shares: the `TrainState` pytree and the net/optimizer plumbing.

A mode is a class with
  * `init_state(rng) -> TrainState`
  * `train_step(state, batch) -> (state, metrics)`: pure; the loop jits it;
  * `sample(state, key, n) -> {name: images}`: what the loop plots and saves;
  * optionally `eval_every`, `eval_split` and `eval_step(state, batch) -> metrics`;
  * `checkpoint_upgrades`: how to read its checkpoints of older state layouts
    (`checkpointing.Upgrade`s, tried when a checkpoint does not fit).
The loop (`train.py`) knows nothing else about it.
"""

from typing import Any, Callable, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax

from hat_ebm_jax import langevin, langevin_programs, losses, models, optim, sharding

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


def split_variables(v: Dict) -> Tuple[Any, Any]:
  """`{'params', 'batch_stats'?}` -> (params, batch_stats or {})."""
  return v['params'], v.get('batch_stats', {})


def apply_update(tx: optax.GradientTransformation, grads, opt_state, params, ema,
                 decay: float):
  """One optimizer step plus the EMA update. Returns (params, opt_state, ema)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return params, opt_state, optim.ema_update(ema, params, decay)


def global_norm(tree) -> jax.Array:
  return optax.global_norm(tree)


def make_generator(config, platform=None):
  """The generator-side net `config.gen_type` (SN-GAN generator, AE decoder, toy MLP),
  its `conv_algorithm` resolved for `platform` (default `jax.default_backend()`)."""
  c = config
  if c.gen_type == 'gen_toy':
    return models.create(c.gen_type, ngf=c.gen_ngf, nz=c.z_sz, out_factor=c.gen_factor,
                         dtype=c.dtype)
  kw = dict(ngf=c.gen_ngf, nch=c.nch, out_factor=c.gen_factor, dtype=c.dtype,
            conv_algorithm=c.conv_algorithm, backend=platform)
  if c.gen_type.startswith('gen_sngan'):
    kw.update(nz=c.z_sz, bottom=c.gen_bottom)
  elif c.gen_type == 'gen_decoder32':
    kw.update(latent_size=c.image_size // 2)
  else:
    raise ValueError(f'config.gen_type={c.gen_type!r} is not a generator; use gen_sngan32/'
                     '64/128, gen_decoder32 or gen_toy.')
  return models.create(c.gen_type, **kw)


def make_ebm(config, platform=None):
  """The hat network `config.ebm_type` (conv EBM or toy MLP), for `platform`."""
  c = config
  if c.ebm_type == 'ebm_toy':
    return models.create(c.ebm_type, ngf=c.ebm_ngf, dtype=c.dtype)
  return models.create(c.ebm_type, ngf=c.ebm_ngf, nch=c.nch, dtype=c.dtype,
                       conv_algorithm=c.conv_algorithm, backend=platform)


class HatEBMMode:
  """Shared pieces of the two Hat EBM modes (synthesis, joint): nets, Langevin, EBM step.

  `platform` ('cpu', 'gpu', 'tpu'; default `jax.default_backend()`) is the platform the
  steps are compiled for: `conv_algorithm='auto'` and `mcmc_unroll='auto'` resolve for
  it (a TPU plan made on a CPU host gets direct convs and the rolled loop).
  """

  def __init__(self, config, platform=None):
    self.config = config
    c = config
    self.platform = platform or jax.default_backend()
    self.ebm = make_ebm(c, self.platform)
    self.gen = make_generator(c, self.platform)
    self.ebm_tx = optim.make_optimizer(c.ebm_lr_info, c.clip_ebm_grad, c.max_grad_norm)
    self.ebm_lr = optim.step_schedule(c.ebm_lr_info)
    self.sampler = langevin.Settings.from_config(c)
    self.latent_shape = models.latent_shape(self.gen)


  def data_shape(self):
    """Per-sample shape of the data the EBM sees."""
    return models.input_shape(self.ebm, self.config.image_size)

  # The nets as `Partial` pytrees: on concrete arrays, `langevin_programs.sample` then
  # passes the variables to its compiled programs as arguments (compiled once).
  def ebm_apply_fn(self, state: TrainState, use_ema: bool = False) -> Callable:
    return langevin.nets(self.ebm, variables(state, 'ebm', use_ema))

  def gen_apply_fn(self, state: TrainState, use_ema: bool = False) -> Callable:
    return langevin.nets(self.gen, variables(state, 'gen', use_ema))

  def init_chains(self, key, n: int):
    """Langevin starting points: `z = s_z N(0, I)`, `y = s_y N(0, I)` (SPEC §4 step 1)."""
    kz, ky = jax.random.split(key)
    c = self.config
    z = c.init_scale_latent * jax.random.normal(kz, (n,) + self.latent_shape)
    y_shape = (n,) + self.data_shape()
    y = (c.init_scale_res * jax.random.normal(ky, y_shape) if c.init_scale_res
         else jnp.zeros(y_shape, jnp.float32))
    return sharding.constrain_batch((z, y))  # chains split over devices

  # A training step is `update_step(state, batch, langevin_step(state, batch))`: traced
  # as one program, or on CPU for long samplers with the Langevin phase driven from the
  # host (`langevin_programs.runs_on_host`, train.py: `langevin_step(..., concrete=True)`).
  checkpoint_upgrades = ()
  num_step_keys = 2  # keys a training step draws (`step_key`); the first is Langevin's

  def langevin_step(self, state: TrainState, batch,
                    concrete: bool = False) -> langevin.LangevinResult:
    """This training step's Langevin run (SPEC §4 steps 1-2), one chain per data row.
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
    """EBM step: `loss = (mean H(data + data_epsilon N) - mean H(samples)) / T`."""
    c = self.config
    x_data = data + c.data_epsilon * jax.random.normal(key, data.shape, data.dtype)
    bs = state.batch_stats.get('ebm', {})

    def loss_fn(params):
      v = {'params': params, **({'batch_stats': bs} if bs else {})}
      e_data = self.ebm.apply(v, x_data)
      e_samples = self.ebm.apply(v, samples)
      loss = losses.ebm_loss(e_data, e_samples, c.mcmc_temp)
      return loss, (jnp.mean(e_data), jnp.mean(e_samples))

    (loss, (e_data, e_samples)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params['ebm'])
    params, opt_state, ema = apply_update(self.ebm_tx, grads, state.opt_state['ebm'],
                                          state.params['ebm'], state.ema['ebm'],
                                          c.ebm_opt_decay)
    metrics = dict(ebm_loss=loss, energy_data=e_data, energy_samples=e_samples,
                   ebm_grad_norm=global_norm(grads), lr_ebm=self.ebm_lr(state.step))
    return params, opt_state, ema, metrics

  def langevin_metrics(self, r: langevin.LangevinResult) -> Metrics:
    """The sampler's diagnostics: both gradient norms and the mean latent norm."""
    n = r.z.shape[0]
    return dict(grad_norm_latent=r.grad_norm_latent, grad_norm_res=r.grad_norm_res,
                z_norm=jnp.mean(jnp.sqrt(jnp.sum(jnp.square(r.z.reshape(n, -1)), axis=1))))

  def sample(self, state: TrainState, key, n: int, batch=None) -> Dict[str, jax.Array]:
    """`{'hat': G(z) + y, 'gen': G(z_init)}` for `n` fresh chains (same latents)."""
    del batch
    r = self.run_langevin(state, key, n, use_ema=self.config.use_ema)
    z0, y0 = self.init_chains(jax.random.split(key)[0], n)
    del z0
    return {'hat': r.images, 'gen': r.images_init - y0}


def finite(*xs) -> jax.Array:
  """True when every array in `xs` is finite everywhere."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in xs]))
