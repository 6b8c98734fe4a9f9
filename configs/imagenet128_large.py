"""ImageNet 128 px synthesis with the large nets, ngf 2048 (paper: FID 29.37).

docs/algorithm.md §8.

`configs/imagenet128_large.py:eval` evaluates a run or imported weights (paper: FID 29.37
± 0.15), docs/algorithm.md §9 (`config_lib.evaluation_config`). Sampling: `z ~ N(0, I)`
fixed, 125
Langevin steps on `y` from `y = 0.01 N(0, I)`, `epsilon = 0.0005`, `T = 1e-08`.
`--config.data_dir=TFDS_DIR` for the prepared dataset.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hat_ebm_jax import config_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
import imagenet128  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config(arg: str = ''):
  """The training config; `arg='eval'` its evaluation config (docs/algorithm.md §9)."""
  c = imagenet128.get_config(ngf=2048)
  c.exp_name = 'imagenet128_large'
  return config_lib.train_or_eval(
      c, arg, mcmc_steps=125, epsilon=0.0005, mcmc_temp=1e-08, tau_res=0.0,
      init_scale_res=0.01,
      **config_lib.PAPER_EVALUATION)
