"""CIFAR-10 refinement of a pretrained SN-GAN (paper: FID 14.04). SPEC §6.

Needs `--config.gen_weights=` the SN-GAN generator (converted with hat_ebm_jax.convert, or
the authors' TF checkpoint prefix)."""

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.exp_name = 'cifar10_refine'
  c.mode = 'joint'
  c.dataset = 'cifar10'
  c.image_size = 32
  c.num_training_steps = 25000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan32', 256
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_sngan32', 256, 1.0
  c.ebm_lr_info = [[1e-5, 0]]
  c.mcmc_steps = 250
  c.epsilon = 1e-4
  c.epsilon_latent = 5e-3
  c.mcmc_temp = 1e-3
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  return c
