"""Entry point: `python -m hat_ebm_jax.main --config=configs/<name>.py --workdir=DIR`.

Override any config key with `--config.<key>=<value>`. `config.mode` picks synthesis,
joint or autoencoder training, or evaluation. On several hosts, `jax.distributed` is
initialised from the flags below, from SLURM's variables, or automatically on Cloud TPU.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, summaries and '
                               'samples (local path or gs://).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0 (multi-host without TPU/SLURM).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process index.')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() '
                               'with automatic detection (Cloud TPU pods, SLURM).')
flags.mark_flags_as_required(['config', 'workdir'])


def init_distributed() -> None:
  """Initialises the multi-controller runtime when the flags or environment ask for it."""
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value or _NUM_PROCESSES.value:
    if not (_COORDINATOR.value and _NUM_PROCESSES.value is not None
            and _PROCESS_ID.value is not None):
      raise ValueError('Multi-process runs need --coordinator_address, --num_processes '
                       'and --process_id together (or --multihost on TPU/SLURM).')
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      raise ValueError(f'--process_id={_PROCESS_ID.value} is outside [0, '
                       f'{_NUM_PROCESSES.value}).')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _MULTIHOST.value or 'SLURM_NTASKS' in os.environ and int(
      os.environ['SLURM_NTASKS']) > 1:
    jax.distributed.initialize()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_threefry_partitionable', True)
  init_distributed()
  config = _CONFIG.value
  logging.info('JAX %s on %d process(es), devices: %s', jax.__version__,
               jax.process_count(), jax.devices())
  if config.mode == 'evaluate':
    from hat_ebm_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.run(config, _WORKDIR.value)
  else:
    from hat_ebm_jax import train  # pylint: disable=g-import-not-at-top
    train.run(config, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)
