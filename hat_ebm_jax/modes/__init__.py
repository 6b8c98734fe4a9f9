"""Training modes. `create(config)` returns the mode object `config.mode` names."""

from hat_ebm_jax.modes.autoencoder import AutoencoderMode
from hat_ebm_jax.modes.base import TrainState
from hat_ebm_jax.modes.joint import JointMode
from hat_ebm_jax.modes.synthesis import SynthesisMode

MODES = {'synthesis': SynthesisMode, 'joint': JointMode, 'autoencoder': AutoencoderMode}


def create(config):
  if config.mode not in MODES:
    raise ValueError(f'Unknown training mode {config.mode!r}; choose one of '
                     f'{", ".join(MODES)} (or evaluate).')
  return MODES[config.mode](config)
