"""CIFAR-10 32 px synthesis (paper: FID 19.30). SPEC §6."""

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.exp_name = 'cifar10_synth'
  c.mode = 'synthesis'
  c.dataset = 'cifar10'
  c.image_size = 32
  c.num_training_steps = 50000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan32', 256
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_sngan32', 256, 2.0
  c.ebm_lr_info = [[1e-4, 0]]
  c.gen_lr_info = [[1e-4, 0]]
  c.mcmc_steps = 50
  c.epsilon = 5e-4
  c.mcmc_temp = 1e-8
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  return c
