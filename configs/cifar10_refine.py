"""CIFAR-10 refinement of a pretrained SN-GAN (paper: FID 14.04). docs/algorithm.md §8.

Needs `--config.gen_weights=` the SN-GAN generator (converted with hat_ebm_jax.pretrained, or
the authors' TF checkpoint prefix).

`configs/cifar10_refine.py:eval` evaluates a run or imported weights (paper: FID 14.04
± 0.11; SN-GAN alone 18.58, the `G(z)` row of the comparison table), docs/algorithm.md §9
(`config_lib.evaluation_config`). Sampling: 350 Langevin steps on `z` and `y` from
`z ~ N(0, I)`, `y = 0`, `epsilon = 0.0001`, `epsilon_latent = 0.005`, `T = 0.001`,
`tau_res = 8`.
"""

from hat_ebm_jax import config_lib


def get_config(arg: str = ''):
  """The training config; `arg='eval'` its evaluation config (docs/algorithm.md §9)."""
  c = config_lib.base_config()
  c.exp_name = 'cifar10_refine'
  c.mode = 'joint'
  c.dataset = 'cifar10'
  c.image_size = 32
  c.num_training_steps = 25000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan32', 256
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_sngan32', 256, 1.0
  c.ebm_lr_info = ((1e-5, 0),)
  c.mcmc_steps = 250
  c.epsilon = 1e-4
  c.epsilon_latent = 5e-3
  c.mcmc_temp = 1e-3
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  return config_lib.train_or_eval(
      c, arg, mcmc_steps=350, epsilon=0.0001, epsilon_latent=0.005, mcmc_temp=0.001,
      tau_res=8.0, init_scale_res=0.0,
      **config_lib.PAPER_EVALUATION)
