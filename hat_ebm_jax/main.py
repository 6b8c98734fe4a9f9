"""Entry point: `python -m hat_ebm_jax.main --config=configs/<name>.py --workdir=DIR`.

Override any config key with `--config.<key>=<value>`. `config.mode` picks synthesis,
joint or autoencoder training, or evaluation. On several hosts, `jax.distributed` is
initialised from the flags below, from SLURM's variables, or automatically on Cloud TPU:

* explicit: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on each
  process (`launch/local_multiprocess.sh` does this on one machine);
* `--multihost`: `jax.distributed.initialize()` detects the cluster (Cloud TPU pod
  slices, SLURM, Open MPI, Kubernetes), see `launch/tpu_pod.sh`;
* under `srun` with more than one task (`SLURM_NTASKS > 1`) the same happens without the
  flag, see `launch/slurm_gpu.sbatch`.

Every process runs the same command; process 0 writes logs, summaries and samples.
A mistake in the flags, the config or the files they name stops with one line and exit
code 2 (`hat_ebm_jax.cli`); `--verbose` shows its traceback.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from hat_ebm_jax import cli

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
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    'local_device_ids', None, 'GPU ids this process drives (e.g. 0,1,2,3 for one process '
    'per node). Default: jax\'s choice (all local devices; under SLURM, GPU SLURM_LOCALID '
    'for one process per GPU).')
flags.mark_flags_as_required(['config', 'workdir'])


@flags.multi_flags_validator(
    ['coordinator_address', 'num_processes', 'process_id'],
    message='Multi-process runs need --coordinator_address=HOST:PORT, --num_processes=N '
    'and --process_id=I together, with 0 <= I < N (or --multihost on TPU/SLURM).')
def _check_process_flags(f):
  given = [f[k] is not None for k in ('coordinator_address', 'num_processes', 'process_id')]
  if not any(given):
    return True
  if not all(given) or f['num_processes'] < 1:
    return False
  if not 0 <= f['process_id'] < f['num_processes']:
    raise flags.ValidationError(
        f'--process_id={f["process_id"]} is outside [0, {f["num_processes"]}): with '
        f'--num_processes={f["num_processes"]} the ids are 0..{f["num_processes"] - 1}.')
  return True


def init_distributed() -> None:
  """Initialises the multi-controller runtime when the flags or environment ask for it.

  Must run before anything touches a device. The flags were checked at parsing
  (`_check_process_flags`).
  """
  import jax  # pylint: disable=g-import-not-at-top
  local = ([int(i) for i in _LOCAL_DEVICE_IDS.value] if _LOCAL_DEVICE_IDS.value
           else None)
  if _COORDINATOR.value is not None:
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                               local_device_ids=local)
  elif _MULTIHOST.value or int(os.environ.get('SLURM_NTASKS', '1')) > 1:
    jax.distributed.initialize(local_device_ids=local)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  import jax  # pylint: disable=g-import-not-at-top
  from hat_ebm_jax import sharding  # pylint: disable=g-import-not-at-top
  sharding.configure_jax()
  init_distributed()
  config = _CONFIG.value
  logging.info('JAX %s, process %d of %d, %d local / %d global devices: %s',
               jax.__version__, jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count(), jax.devices())
  if config.mode == 'evaluate':
    from hat_ebm_jax import evaluate  # pylint: disable=g-import-not-at-top
    evaluate.run(config, _WORKDIR.value)
  else:
    from hat_ebm_jax import train  # pylint: disable=g-import-not-at-top
    logging.info('Training %s: checkpoints, summaries and samples go to %s '
                 '(--verbosity=1 shows the libraries\' log lines too).', config.mode,
                 _WORKDIR.value)
    train.run(config, _WORKDIR.value)


if __name__ == '__main__':
  cli.run(main)
