"""Offline evaluation of a `configs/digits.py` run: no download, a few minutes on a CPU.

    python -m hat_ebm_jax.main --config=configs/digits.py --workdir=runs/digits
    python -m hat_ebm_jax.main --config=configs/eval_digits.py --workdir=runs/digits

Samples 1,024 chains with the training sampler (20 Langevin steps on `y`) and reports
`digits_fd` for held-out test digits (the floor), the generator alone `G(z)` and the Hat
EBM `G(z) + y` on the same latents; then OOD detection with the energy `H(x)`: the 300
test digits against uniform noise, the same digits with their pixels shuffled, and the
digits inverted (`-x`), one AUROC each. Results in
`runs/digits/eval/eval_digits_raw_step1500_seed0/` (`results.json`, `comparison.md`,
`ood.md`, `ood_hist.png`, sample grids). `--config.use_ema=True` evaluates the EMA weights.
"""

import os

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'digits.py'))
  c.mode = 'evaluate'
  c.eval_model_mode = 'synthesis'
  c.exp_name = 'eval_digits'
  c.num_eval_samples = 1024
  c.eval_batch_size = 128  # divides over 1, 2, 4, ..., 128 devices
  c.ood_datasets = 'noise,shuffled,inverted'
  c.ood_split = 'test'
  c.num_ood_samples = 300
  return c
