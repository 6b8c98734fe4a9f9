"""Tiny Hat EBM for tests: digits at 16 px, narrow nets, a few Langevin steps.

`--config.mode=joint` / `autoencoder` exercise the other modes on the same data."""

from hat_ebm_jax import config_lib


def get_config(mode='synthesis'):
  """`configs/tiny.py:autoencoder` or `:joint` selects the mode (joint needs gen_weights)."""
  c = config_lib.base_config()
  c.mode = mode
  c.exp_name = 'tiny'
  c.dataset = 'digits'
  c.image_size = 16
  c.nch = 1
  c.batch_size = 8
  c.num_training_steps = 6
  c.ebm_ngf = 8
  c.gen_ngf = 8
  c.inf_ngf = 8
  c.z_sz = 8
  c.gen_bottom = 2
  c.gen_factor = 1.0
  c.mcmc_steps = 3
  c.mcmc_temp = 1e-3
  c.epsilon = 1e-2
  c.epsilon_latent = 1e-2
  c.persistent_size = 64
  c.shuffle_buffer = 64
  c.log_freq = 2
  c.plot_freq = 3
  c.checkpoint_freq = 3
  c.num_plot_samples = 8
  c.num_final_samples = 16
  c.steps_per_epoch = 3
  c.test_steps = 2
  if mode == 'autoencoder':
    c.gen_type = 'gen_decoder32'
  if mode == 'joint':
    c.mcmc_temp = 1e-3
  return c
