"""Autoencoder mode (docs/algorithm.md §6), the generator of retrofit.

Encoder and decoder trained with `loss = loss_factor * mean((x - Dec(Enc(x) + data_epsilon N(0, I)))^2)`, one Keras Adam
each (`inf_lr_info` for the encoder, `gen_lr_info` for the decoder), and a test-split
loss (without the latent noise) every `test_and_log_freq` epochs.
"""

import jax

from hat_ebm_jax import losses, models, optim, sharding
from hat_ebm_jax.modes import base


class AutoencoderMode(base.Mode):
  name = 'autoencoder'
  trainable = ('enc', 'dec')
  eval_split = 'test'

  def __init__(self, config, platform=None):
    c = self.config = config
    self.platform = platform or jax.default_backend()  # see base.HatEBMMode
    self.enc = models.make_encoder(c, self.platform)
    self.dec = models.make_generator(c, self.platform)
    self.txs = {'enc': optim.make_optimizer(c.inf_lr_info),
                'dec': optim.make_optimizer(c.gen_lr_info)}
    self.lrs = {'enc': optim.step_schedule(c.inf_lr_info),
                'dec': optim.step_schedule(c.gen_lr_info)}
    self.eval_every = c.test_and_log_freq * c.steps_per_epoch
    self.eval_steps = c.test_steps

  def init_state(self, rng) -> base.TrainState:
    k_enc, k_dec, k_run = jax.random.split(rng, 3)
    enc_v = models.init_variables(self.enc, k_enc, self.config.image_size)
    dec_v = models.init_variables(self.dec, k_dec)
    return base.TrainState.create(variables={'enc': enc_v, 'dec': dec_v}, txs=self.txs,
                                  rng=k_run)

  def _loss(self, params, state, batch, key):
    enc_v = base.variables(state.replace(params=params), 'enc')
    dec_v = base.variables(state.replace(params=params), 'dec')
    z = self.enc.apply(enc_v, batch)
    if key is not None:
      z = z + self.config.data_epsilon * jax.random.normal(key, z.shape, z.dtype)
    return losses.autoencoder_loss(batch, self.dec.apply(dec_v, z), self.config.loss_factor)

  def train_step(self, state: base.TrainState, batch: jax.Array):
    """One step on a data batch `[B, H, W, C]` -> (state, metrics)."""
    (key,) = base.step_key(state, 1)
    loss, grads = jax.value_and_grad(self._loss)(state.params, state, batch, key)
    new = {k: base.apply_update(self.txs[k], grads[k], state.opt_state[k],
                                state.params[k], state.ema[k], self.config.gen_opt_decay,
                                state.step, self.config.ema_warmup)
           for k in self.trainable}
    metrics = dict(ae_loss=loss, finite=base.finite(loss),
                   lr_enc=self.lrs['enc'](state.step), lr_dec=self.lrs['dec'](state.step))
    return state.replace(step=state.step + 1,
                         params={k: v[0] for k, v in new.items()},
                         opt_state={k: v[1] for k, v in new.items()},
                         ema={k: v[2] for k, v in new.items()}), metrics

  def eval_step(self, state: base.TrainState, batch: jax.Array):
    """Test-split reconstruction loss (no latent noise) of a batch."""
    return {'ae_loss': self._loss(state.params, state, batch, None)}

  def sample(self, state: base.TrainState, key, n: int, batch=None):
    """`{'gen': Dec(z)}` for `z ~ N(0, I)` on the latent sphere's scale, and
    `{'recon': Dec(Enc(x)), 'data': x}` when a data batch is given."""
    use_ema = self.config.use_ema
    dec_v = base.variables(state, 'dec', use_ema)
    z = jax.random.normal(key, (n,) + models.latent_shape(self.dec))
    z = sharding.constrain_batch(z)
    out = {'gen': self.dec.apply(dec_v, z)}
    if batch is not None:
      out['recon'] = self.dec.apply(dec_v, self.enc.apply(base.variables(
          state, 'enc', use_ema), batch))
      out['data'] = batch
    return out
