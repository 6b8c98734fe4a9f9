"""Synthesis mode (docs/algorithm.md §6): EBM and generator trained together, with a bank.

Per step: `z ~ s_z N(0, I)`, Langevin on `y` alone (`G(z)` fixed) -> `x = G(z) + y`;
EBM update on data vs `x`; generator update towards bank pairs at `B` distinct random
indices, `loss = gen_loss_factor_coop * mean((G(z_bank) - x_bank)^2)`; then this step's
`(z, x)` is written into the bank at those indices.

The bank also marks which pairs are `fresh`: `x_bank[i] == G(z_bank[i])` under the
current generator, exactly (all of them at the start). A fresh pair's residual is zero in
exact arithmetic, but computed it is rounding noise, and Adam (scale-invariant) turns a
gradient of pure noise into a step of size lr in a random direction, one that changes with
the device count and the CPU. So a fresh pair's prediction is its stored `x` (residual and
gradient exactly zero): the generator stays at its initial parameters until it draws a
written pair, as it does in exact arithmetic, and then no pair is fresh any more.

The bank holds `persistent_size` rounded down to a multiple of the batch (9,984 pairs at
batch 128, as the original on one replica). It is one global bank, sharded over devices,
and the indices are drawn over all of it, so a run gives the same result on any number of
devices (the original kept one slice per replica instead). Its rows are read and written
shard by shard (`sharding.gather_rows`/`set_rows`, the values of global indexing):
a step moves about `B` pairs per device, independent of the bank size and device count.
"""

import jax
import jax.numpy as jnp
import numpy as np

from hat_ebm_jax import checkpointing, langevin, losses, models, optim, sharding
from hat_ebm_jax.modes import base


def _bank_without_fresh(state_like):
  return state_like.replace(bank={k: v for k, v in state_like.bank.items() if k != 'fresh'})


def _no_pair_fresh(state, state_like):
  like = state_like.bank['fresh']
  stale = jax.make_array_from_callback(  # on every host of a multi-host mesh
      like.shape, like.sharding, lambda index: np.zeros(like.shape, like.dtype)[index])
  return state.replace(bank=dict(state.bank, fresh=stale))


# Checkpoints written before the bank marked fresh pairs: their generator took a step at
# step 1 (towards rounding noise), so none of their pairs is fresh.
BANK_WITHOUT_FRESH = checkpointing.Upgrade('a bank without fresh marks',
                                           _bank_without_fresh, _no_pair_fresh)


class SynthesisMode(base.HatEBMMode):
  name = 'synthesis'
  trainable = ('ebm', 'gen')
  num_step_keys = 3  # Langevin, data noise, bank indices
  checkpoint_upgrades = (BANK_WITHOUT_FRESH,)

  def __init__(self, config, platform=None):
    super().__init__(config, platform)
    c = config
    self.gen_tx = optim.make_optimizer(c.gen_lr_info)
    self.gen_lr = optim.step_schedule(c.gen_lr_info)
    self.bank_size = (c.persistent_size // c.batch_size) * c.batch_size

  def init_state(self, rng) -> base.TrainState:
    k_ebm, k_gen, k_bank, k_run = jax.random.split(rng, 4)
    size = self.config.image_size
    ebm_v = models.init_variables(self.ebm, k_ebm, size)
    gen_v = models.init_variables(self.gen, k_gen, size)
    z_bank = self.config.init_scale_latent * jax.random.normal(
        k_bank, (self.bank_size,) + self.latent_shape)
    x_bank = jax.jit(self.gen.apply)(gen_v, z_bank)
    fresh = jnp.ones((self.bank_size,), jnp.bool_)
    return base.TrainState.create(
        variables={'ebm': ebm_v, 'gen': gen_v},
        txs={'ebm': self.ebm_tx, 'gen': self.gen_tx},
        bank={'z': z_bank, 'x': x_bank, 'fresh': fresh}, rng=k_run)

  def update_step(self, state: base.TrainState, batch: jax.Array,
                  r: langevin.LangevinResult):
    """The updates of a synthesis step on a data batch `[B, H, W, C]`, given this step's
    Langevin result `r` (`langevin_step`) -> (state, metrics)."""
    c = self.config
    n = batch.shape[0]
    _, k_data, k_idx = base.step_key(state, self.num_step_keys)
    samples = jax.lax.stop_gradient(r.images)
    ebm_p, ebm_o, ebm_e, metrics = self.ebm_update(state, batch, samples, k_data)

    # Generator: regress G(z_bank[i]) onto x_bank[i] at B distinct indices.
    idx = jax.random.choice(k_idx, self.bank_size, (n,), replace=False)
    z_b, x_b, fresh_b = sharding.gather_rows(
        (state.bank['z'], state.bank['x'], state.bank['fresh']), idx)
    gen_bs = state.batch_stats['gen']
    fresh = fresh_b.reshape((-1,) + (1,) * (x_b.ndim - 1))

    def gen_loss_fn(params):
      v = {'params': params, **({'batch_stats': gen_bs} if gen_bs else {})}
      pred = jnp.where(fresh, x_b, self.gen.apply(v, z_b))
      return losses.gen_coop_loss(pred, x_b, c.gen_loss_factor_coop)

    gen_loss, gen_grads = jax.value_and_grad(gen_loss_fn)(state.params['gen'])
    gen_p, gen_o, gen_e = base.apply_update(
        self.gen_tx, gen_grads, state.opt_state['gen'], state.params['gen'],
        state.ema['gen'], c.gen_opt_decay, state.step, c.ema_warmup)
    # The generator moves unless every pair it drew was fresh; written pairs are not fresh.
    still_fresh = jnp.logical_and(state.bank['fresh'], jnp.all(fresh_b))
    written = sharding.constrain_batch(jnp.zeros((n,), jnp.bool_))
    bank = dict(zip(('z', 'x', 'fresh'), sharding.set_rows(
        (state.bank['z'], state.bank['x'], still_fresh), idx,
        (r.z, samples, written))))

    metrics.update(**self.langevin_metrics(r))
    metrics.update(gen_loss=gen_loss, lr_gen=self.gen_lr(state.step),
                   finite=base.finite(metrics['ebm_loss'], gen_loss,
                                      metrics['energy_data'], metrics['energy_samples']))
    new_state = state.replace(
        step=state.step + 1, params={'ebm': ebm_p, 'gen': gen_p},
        opt_state={'ebm': ebm_o, 'gen': gen_o}, ema={'ebm': ebm_e, 'gen': gen_e},
        bank=bank)
    return new_state, metrics
