"""CIFAR-10 deterministic autoencoder, the generator of retrofit: 100 epochs of 499 steps
at batch 128, test loss over 99 batches each epoch. docs/algorithm.md §6, §8."""

from hat_ebm_jax import config_lib


def get_config():
  c = config_lib.base_config()
  c.exp_name = 'cifar10_ae'
  c.mode = 'autoencoder'
  c.dataset = 'cifar10'
  c.image_size = 32
  c.inf_type, c.inf_ngf = 'inf_encoder32', 256
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_decoder32', 256, 2.0
  c.gen_lr_info = ((1e-4, 0),)
  c.inf_lr_info = ((1e-4, 0),)
  c.loss_factor = 1000.0
  c.data_epsilon = 0.02
  c.num_epochs = 100
  c.steps_per_epoch = 499
  c.test_steps = 99
  c.test_and_log_freq = 1
  c.num_training_steps = c.num_epochs * c.steps_per_epoch
  return c
