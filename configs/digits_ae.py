"""A deterministic autoencoder on the offline default's digits: the generator of
`configs/digits_retrofit.py` (the digits counterpart of `configs/cifar10_ae.py`).

The encoder maps a 16 px digit to an 8x8 latent on the sphere of radius 8; the decoder
maps it back. Decoding latents drawn from the prior `N(0, I)` gives poor digits (the
latents of real digits fill only part of the sphere): the retrofit EBM corrects that.

    python -m hat_ebm_jax.main --config=configs/digits_ae.py --workdir=runs/digits_ae
"""

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.exp_name = 'digits_ae'
  c.mode = 'autoencoder'
  c.dataset = 'digits'
  c.image_size = 16
  c.nch = 1
  c.batch_size = 64
  c.inf_type, c.inf_ngf = 'inf_encoder32', 32
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_decoder32', 32, 2.0
  c.gen_lr_info = ((1e-3, 0),)
  c.inf_lr_info = ((1e-3, 0),)
  c.loss_factor = 1000.0
  c.data_epsilon = 0.02
  c.num_epochs = 30
  c.steps_per_epoch = 23  # 1,497 training digits in batches of 64
  c.test_steps = 4  # 300 test digits
  c.test_and_log_freq = 5
  c.num_training_steps = c.num_epochs * c.steps_per_epoch
  c.shuffle_buffer = 1497
  c.plot_freq = 230
  c.checkpoint_freq = 230
  c.num_plot_samples = 64
  return c
