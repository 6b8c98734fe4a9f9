"""CelebA 64 px refinement of a pretrained SN-GAN (paper: FID 5.98). SPEC §6.

Needs `--config.gen_weights=` the SN-GAN generator."""

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.exp_name = 'celeba64_refine'
  c.mode = 'joint'
  c.dataset = 'celeb_a'
  c.image_size = 64
  c.num_training_steps = 25000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan64', 1024
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_sngan64', 1024, 1.0
  c.ebm_lr_info = [[1e-5, 0]]
  c.mcmc_steps = 100
  c.epsilon = 1e-4
  c.epsilon_latent = 5e-3
  c.mcmc_temp = 1e-6
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  return c
