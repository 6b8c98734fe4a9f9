"""CIFAR-10 retrofit: a Hat EBM on a deterministic autoencoder's decoder (paper: FID 26.01).

Run `configs/cifar10_ae.py` first, then pass its workdir: `--config.gen_weights=runs/ae`.
docs/algorithm.md §8.

`configs/cifar10_retrofit.py:eval` evaluates a run or imported weights (paper: FID
26.01), docs/algorithm.md §9 (`config_lib.evaluation_config`). Sampling: 125 Langevin
steps on `z` and `y` from `z ~ N(0, I)`, `y = 0.01 N(0, I)`, `epsilon = 0.0005`, `epsilon_latent = 0.001`,
`T = 0.001`, `tau_res = 50`.
"""

from hat_ebm_jax import config_lib


def get_config(arg: str = ''):
  """The training config; `arg='eval'` its evaluation config (docs/algorithm.md §9)."""
  c = config_lib.base_config()
  c.exp_name = 'cifar10_retrofit'
  c.mode = 'joint'
  c.dataset = 'cifar10'
  c.image_size = 32
  c.num_training_steps = 25000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan32', 256
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_decoder32', 256, 2.0
  c.ebm_lr_info = ((1e-4, 0),)
  c.mcmc_steps = 100
  c.epsilon = 5e-4
  c.epsilon_latent = 1e-3
  c.mcmc_temp = 1e-3
  c.tau_res = 50.0
  c.data_epsilon = 1e-2
  c.clip_langevin_grad_res = False
  return config_lib.train_or_eval(
      c, arg, mcmc_steps=125, epsilon=0.0005, epsilon_latent=0.001, mcmc_temp=0.001,
      tau_res=50.0, init_scale_res=0.01,
      **config_lib.PAPER_EVALUATION)
