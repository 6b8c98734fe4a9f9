"""The offline default: a synthesis Hat EBM on scikit-learn's handwritten digits (shipped
with the package, no download), 16 px grey images, narrow versions of the paper's 32 px
nets (the generator starts at 2x2 instead of 4x4). Trains in about 15 minutes on 2 CPU
cores and reports `digits_fd` for held-out digits (the floor), `G(z)` and `G(z) + y`.
"""

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.exp_name = 'digits'
  c.mode = 'synthesis'
  c.dataset = 'digits'
  c.image_size = 16
  c.nch = 1
  c.batch_size = 64
  c.num_training_steps = 1500
  c.ebm_type, c.ebm_ngf = 'ebm_sngan32', 32
  c.gen_type, c.gen_ngf, c.gen_factor, c.gen_bottom = 'gen_sngan32', 32, 2.0, 2
  c.z_sz = 32
  c.ebm_lr_info = [[1e-4, 0]]
  c.gen_lr_info = [[1e-4, 0]]
  c.mcmc_steps = 20
  c.epsilon = 5e-4
  c.mcmc_temp = 1e-8
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 0.75  # the paper's 2.5 over 3,072 pixels, scaled to 256
  c.persistent_size = 1536
  c.shuffle_buffer = 1497
  c.log_freq = 50
  c.plot_freq = 250
  c.checkpoint_freq = 250
  c.num_plot_samples = 64
  c.num_final_samples = 1000
  c.final_metrics = True
  return c
