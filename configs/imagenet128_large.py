"""ImageNet 128 px synthesis with the large nets, ngf 2048 (paper: FID 29.37). SPEC §6."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import imagenet128  # pylint: disable=g-import-not-at-top,wrong-import-position


def get_config():
  c = imagenet128.get_config(ngf=2048)
  c.exp_name = 'imagenet128_large'
  return c
