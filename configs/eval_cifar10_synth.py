"""Evaluation of CIFAR-10 32 px synthesis (paper: FID 19.30 ± 0.15), SPEC §7.

    # a run of configs/cifar10_synth.py (its latest checkpoint, raw weights):
    python -m hat_ebm_jax.main --config=configs/eval_cifar10_synth.py --workdir=RUN \
        --config.fid_weights=fid_inception.npz
    # the authors' TF checkpoints (or hat_ebm_jax.convert output directories):
    python -m hat_ebm_jax.main --config=configs/eval_cifar10_synth.py --workdir=OUT \
        --config.ebm_weights=EBM_CKPT_PREFIX --config.gen_weights=GEN_CKPT_PREFIX \
        --config.fid_weights=fid_inception.npz

Sampling: `z ~ N(0, I)` fixed, 125 Langevin steps on `y` from `y = 0.01 N(0, I)`,
`epsilon = 0.0005`, `T = 0.001` (the original's generic evaluation config).
Residual-gradient clipping is off (`clip_langevin_grad_res = False`): the original's
evaluation configs name the clip `clip_langevin_grad` / `max_langevin_norm`, which its
sampler does not read, so its evaluation sampling ran unclipped. FID: 520 batches of 96
(49,920 samples) against as many `train` images; `--config.eval_seed=S` for the spread
over seeds. Results in `WORKDIR/eval/<eval_name>/results.json`.
"""

import os

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cifar10_synth.py'))
  c.mode = 'evaluate'
  c.eval_model_mode = 'synthesis'
  c.exp_name = 'eval_cifar10_synth'
  c.mcmc_steps = 125
  c.epsilon = 0.0005
  c.mcmc_temp = 0.001
  c.tau_res = 0.0
  c.init_scale_res = 0.01
  c.clip_langevin_grad_res = False  # as the original's evaluation ran (see above)
  c.num_eval_samples = 49920  # 520 batches of 96
  c.eval_batch_size = 96
  return c
