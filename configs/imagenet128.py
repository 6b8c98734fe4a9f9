"""ImageNet 128 px synthesis (paper: FID 40.24), 300k steps. docs/algorithm.md §8.

`configs/imagenet128.py:eval` evaluates a run or imported weights (paper: FID 40.24
± 0.18), docs/algorithm.md §9 (`config_lib.evaluation_config`). Sampling: `z ~ N(0, I)` fixed, 150
Langevin steps on `y` from `y = 0.01 N(0, I)`, `epsilon = 0.0005`, `T = 1e-08`.
`--config.data_dir=TFDS_DIR` for the prepared dataset.
"""

from hat_ebm_jax import config_lib


def get_config(arg: str = '', ngf: int = 1024):
  """The training config; `arg='eval'` its evaluation config (docs/algorithm.md §9)."""
  c = config_lib.base_config()
  c.exp_name = 'imagenet128'
  c.mode = 'synthesis'
  c.dataset = 'imagenet2012'
  c.image_size = 128
  c.random_crop = True
  c.num_training_steps = 300000
  c.ebm_type, c.ebm_ngf = 'ebm_sngan128', ngf
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_sngan128', ngf, 2.0
  c.ebm_lr_info = ((1e-4, 0), (1e-5, 230000), (1e-6, 260000))
  c.gen_lr_info = ((5e-5, 0), (1e-5, 230000), (1e-6, 260000))
  c.clip_ebm_grad = True
  c.max_grad_norm = 50.0
  c.mcmc_steps = 50
  c.epsilon = 5e-4
  c.mcmc_temp = 1e-8
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  return config_lib.train_or_eval(
      c, arg, mcmc_steps=150, epsilon=0.0005, mcmc_temp=1e-08, tau_res=0.0,
      init_scale_res=0.01,
      **config_lib.PAPER_EVALUATION)
