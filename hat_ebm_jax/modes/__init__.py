"""Training modes. `create(config)` returns the mode object `config.mode` names."""

from hat_ebm_jax.modes.autoencoder import AutoencoderMode
from hat_ebm_jax.modes.base import TrainState
from hat_ebm_jax.modes.joint import JointMode
from hat_ebm_jax.modes.synthesis import SynthesisMode

MODES = {'synthesis': SynthesisMode, 'joint': JointMode, 'autoencoder': AutoencoderMode}


def create(config, platform=None, gen_variables=None):
  """The mode `config.mode` names, its steps compiled for `platform` ('cpu', 'gpu',
  'tpu'; default `jax.default_backend()`). `gen_variables` (joint mode only): the frozen
  generator's variables instead of loading `config.gen_weights`."""
  if config.mode not in MODES:
    raise ValueError(f'Unknown training mode {config.mode!r}; choose one of '
                     f'{", ".join(MODES)} (or evaluate).')
  if gen_variables is not None:
    if config.mode != 'joint':
      raise ValueError(f'gen_variables is for joint mode; config.mode={config.mode!r}.')
    return JointMode(config, platform, gen_variables)
  return MODES[config.mode](config, platform)
