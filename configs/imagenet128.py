"""ImageNet 128 px synthesis (paper: FID 40.24), 300k steps. SPEC §6."""

from hat_ebm_jax import config_lib


def get_config(ngf: int = 1024):
  c = config_lib.base_config()
  c.exp_name = 'imagenet128'
  c.mode = 'synthesis'
  c.dataset = 'imagenet2012'
  c.image_size = 128
  c.random_crop = True
  c.num_training_steps = 300000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan128', ngf
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_sngan128', ngf, 2.0
  c.ebm_lr_info = [[1e-4, 0], [1e-5, 230000], [1e-6, 260000]]
  c.gen_lr_info = [[5e-5, 0], [1e-5, 230000], [1e-6, 260000]]
  c.clip_ebm_grad = True
  c.max_grad_norm = 50.0
  c.mcmc_steps = 50
  c.epsilon = 5e-4
  c.mcmc_temp = 1e-8
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  return c
