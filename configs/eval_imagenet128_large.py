"""Deprecated (goes in the next release): use `--config=configs/imagenet128_large.py:eval`, the same
config."""

from hat_ebm_jax import config_lib


def get_config():
  return config_lib.deprecated_eval_config(__file__, 'imagenet128_large')
