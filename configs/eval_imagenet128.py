"""Evaluation of ImageNet 128 px synthesis (paper: FID 40.24 ± 0.18), SPEC §7.

    # a run of configs/imagenet128.py (its latest checkpoint, raw weights):
    python -m hat_ebm_jax.main --config=configs/eval_imagenet128.py --workdir=RUN \
        --config.fid_weights=fid_inception.npz --config.data_dir=TFDS_DIR
    # the authors' TF checkpoints (or hat_ebm_jax.convert output directories):
    python -m hat_ebm_jax.main --config=configs/eval_imagenet128.py --workdir=OUT \
        --config.ebm_weights=EBM_CKPT_PREFIX --config.gen_weights=GEN_CKPT_PREFIX \
        --config.fid_weights=fid_inception.npz --config.data_dir=TFDS_DIR

Sampling: `z ~ N(0, I)` fixed, 150 Langevin steps on `y` from `y = 0.01 N(0, I)`,
`epsilon = 0.0005`, `T = 1e-08`.
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
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'imagenet128.py'))
  c.mode = 'evaluate'
  c.eval_model_mode = 'synthesis'
  c.exp_name = 'eval_imagenet128'
  c.mcmc_steps = 150
  c.epsilon = 0.0005
  c.mcmc_temp = 1e-08
  c.tau_res = 0.0
  c.init_scale_res = 0.01
  c.clip_langevin_grad_res = False  # as the original's evaluation ran (see above)
  c.num_eval_samples = 49920  # 520 batches of 96
  c.eval_batch_size = 96
  return c
