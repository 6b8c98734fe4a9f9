"""Evaluation of CelebA 64 px refinement of SN-GAN, SPEC §7 (paper: FID 5.98 ± 0.02;
SN-GAN alone 6.13, the `G(z)` row of the comparison table).

    # a run of configs/celeba64_refine.py (its latest checkpoint, raw weights):
    python -m hat_ebm_jax.main --config=configs/eval_celeba64_refine.py --workdir=RUN \
        --config.fid_weights=fid_inception.npz --config.data_dir=TFDS_DIR
    # the authors' TF checkpoints (or hat_ebm_jax.convert output directories):
    python -m hat_ebm_jax.main --config=configs/eval_celeba64_refine.py --workdir=OUT \
        --config.ebm_weights=EBM_CKPT_PREFIX --config.gen_weights=GEN_CKPT_PREFIX \
        --config.fid_weights=fid_inception.npz --config.data_dir=TFDS_DIR

Sampling: 125 Langevin steps on `z` and `y` from `z ~ N(0, I)`, `y = 0`,
`epsilon = 0.0001`, `epsilon_latent = 0.005`, `T = 1e-06`, `tau_res = 0`.
Residual-gradient clipping is off (`clip_langevin_grad_res = False`): the original's
evaluation configs name the clip `clip_langevin_grad` / `max_langevin_norm`, which its
sampler does not read, so its evaluation sampling ran unclipped. FID: 520 batches of 96
(49,920 samples) against as many `train` images; `--config.eval_seed=S` for the spread
over seeds. Results in `WORKDIR/eval/<eval_name>/results.json`.

Joint runs keep the frozen generator in their checkpoints; to rebuild the run's state the
generator named by its `gen_weights` (or `--config.gen_weights`) must still be readable.
"""

import os

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.load_config_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), 'celeba64_refine.py'))
  c.mode = 'evaluate'
  c.eval_model_mode = 'joint'
  c.exp_name = 'eval_celeba64_refine'
  c.mcmc_steps = 125
  c.epsilon = 0.0001
  c.epsilon_latent = 0.005
  c.mcmc_temp = 1e-06
  c.tau_res = 0.0
  c.init_scale_res = 0.0
  c.clip_langevin_grad_res = False  # as the original's evaluation ran (see above)
  c.num_eval_samples = 49920  # 520 batches of 96
  c.eval_batch_size = 96
  return c
