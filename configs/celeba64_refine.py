"""CelebA 64 px refinement of a pretrained SN-GAN (paper: FID 5.98). docs/algorithm.md §8.

Needs `--config.gen_weights=` the SN-GAN generator.

`configs/celeba64_refine.py:eval` evaluates a run or imported weights (paper: FID 5.98
± 0.02; SN-GAN alone 6.13, the `G(z)` row of the comparison table), docs/algorithm.md §9
(`config_lib.evaluation_config`). Sampling: 125 Langevin steps on `z` and `y` from
`z ~ N(0, I)`, `y = 0`, `epsilon = 0.0001`, `epsilon_latent = 0.005`, `T = 1e-06`,
`tau_res = 0`. `--config.data_dir=TFDS_DIR` for the prepared dataset.
"""

from hat_ebm_jax import config_lib


def get_config(arg: str = ''):
  """The training config; `arg='eval'` its evaluation config (docs/algorithm.md §9)."""
  c = config_lib.base_config()
  c.exp_name = 'celeba64_refine'
  c.mode = 'joint'
  c.dataset = 'celeb_a'
  c.image_size = 64
  c.num_training_steps = 25000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan64', 1024
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_sngan64', 1024, 1.0
  c.ebm_lr_info = ((1e-5, 0),)
  c.mcmc_steps = 100
  c.epsilon = 1e-4
  c.epsilon_latent = 5e-3
  c.mcmc_temp = 1e-6
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  return config_lib.train_or_eval(
      c, arg, mcmc_steps=125, epsilon=0.0001, epsilon_latent=0.005, mcmc_temp=1e-06,
      tau_res=0.0, init_scale_res=0.0,
      **config_lib.PAPER_EVALUATION)
