"""Joint mode (docs/algorithm.md §6): refinement of a pretrained SN-GAN generator and
retrofit of an autoencoder's decoder. The generator is frozen (loaded from `config.gen_weights`);
Langevin moves both `z` and `y` under `p(y, z) ∝ exp(-H(G(z) + y))`; only the EBM learns.
"""

import jax

from hat_ebm_jax import langevin, models, pretrained
from hat_ebm_jax.modes import base


class JointMode(base.HatEBMMode):
  """`gen_variables`: the frozen generator's Flax variables (arrays, or
  `jax.ShapeDtypeStruct`s under `jax.eval_shape`); default: loaded from
  `config.gen_weights` by `init_state`."""
  name = 'joint'
  trainable = ('ebm',)

  def __init__(self, config, platform=None, gen_variables=None):
    super().__init__(config, platform)
    self.gen_variables = gen_variables

  def init_state(self, rng) -> base.TrainState:
    k_ebm, k_run = jax.random.split(rng)
    ebm_v = models.init_variables(self.ebm, k_ebm, self.config.image_size)
    gen_v = self.gen_variables
    if gen_v is None:
      gen_v = pretrained.load_pretrained(self.config.gen_weights, self.gen,
                                         self.config.gen_type)
    return base.TrainState.create(variables={'ebm': ebm_v}, txs={'ebm': self.ebm_tx},
                                  frozen={'gen': gen_v}, rng=k_run)

  def update_step(self, state: base.TrainState, batch: jax.Array,
                  r: langevin.LangevinResult):
    """The EBM update of a joint step on a data batch, given this step's Langevin result
    `r` (`langevin_step`) -> (state, metrics)."""
    _, k_data = base.step_key(state, self.num_step_keys)
    samples = jax.lax.stop_gradient(r.images)
    ebm_p, ebm_o, ebm_e, metrics = self.ebm_update(state, batch, samples, k_data)
    metrics.update(**self.langevin_metrics(r))
    metrics.update(finite=base.finite(metrics['ebm_loss'], metrics['energy_data'],
                                      metrics['energy_samples']))
    return state.replace(step=state.step + 1, params={'ebm': ebm_p},
                         opt_state={'ebm': ebm_o}, ema={'ebm': ebm_e}), metrics
