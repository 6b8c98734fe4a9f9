"""Command-line entry points: a user's mistake is one message and exit code 2.

A mistake in the command line, the config or the files it names (an unknown key, a
value of the wrong type, a batch that does not divide, a dataset not prepared, weights of
another net...) prints `error: <what is wrong and what to do>` on stderr, with no
traceback, and exits 2. Any other exception is an internal error and keeps its
traceback. `--verbose` shows the traceback of a user error too.

An absl entry point:

    from hat_ebm_jax import cli

    def main(argv):
      ...
      raise cli.UserError('--foo=3 is not a topology; choose one of v4-8, v5e-16.')

    if __name__ == '__main__':
      cli.run(main)  # instead of absl's app.run(main)

An argparse entry point: `cli.exit_on_user_error(main)`. Existing checks that raise a
`ValueError` (or any other type) become user errors without changing their type, so
callers that catch it keep working: `raise cli.user_error(ValueError(msg))`, or
`with cli.user_errors(ValueError): check(...)` around a call whose errors of that type
are all the user's.

What a command prints: where it writes, one progress line per `log_freq` steps
(`Progress`), warnings and errors, and the final metrics.

* `quiet_logging()`: the package's own INFO lines stay; every library's (orbax, tfds,
  clu's per-metric writer lines, jax) is shown from WARNING up. absl's `--verbosity=1`
  (or more) shows them all again.
* `default_platforms()`: on a machine with libtpu installed but no TPU, jax would probe
  for one at backend start and print `TPU_WORKER_HOSTNAMES` / `Failed to find host
  bounds` errors; this picks `jax_platforms` ('cpu', or 'cuda,cpu' with a GPU) before
  jax starts its backends. A `JAX_PLATFORMS` set by the user always wins.

`run` applies both to every absl command. This module imports nothing of the package and
no JAX at import.
"""

import contextlib
import functools
import glob
import importlib.abc
import importlib.machinery
import importlib.util
import logging as std_logging
import os
import re
import sys
import time
from typing import Callable, Dict, Mapping, Optional, Sequence, Type

from absl import logging

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
CUDA_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin')


class _OwnInfoOnly(std_logging.Filter):
  """Passes WARNING and above from anyone, and lower levels only from the package."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    return os.path.abspath(record.pathname or '').startswith(PACKAGE_DIR + os.sep)


_FILTER = _OwnInfoOnly()


def quiet_logging(verbose: bool = False) -> None:
  """Library log lines below WARNING are dropped unless `verbose` (`--verbosity>=1`).

  Also hides TensorFlow's C++ INFO lines (`TF_CPP_MIN_LOG_LEVEL=1`) unless the user set
  that variable, and the ones its import writes before that applies
  (`_QuietTensorFlowImport`). Idempotent.
  """
  handler = logging.get_absl_handler()
  handler.removeFilter(_FILTER)
  sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowImport)]
  if verbose:
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  handler.addFilter(_FILTER)
  sys.meta_path.insert(0, _QuietTensorFlowImport())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Runs TensorFlow's import, whoever asks for it first (the input pipeline, clu, tfds),
  with the process's standard error closed. TF 2.21 logs 'oneDNN custom operations are
  on' through absl's C++ logging before `TF_CPP_MIN_LOG_LEVEL` applies, four lines on
  every command. A Python error of the import is still raised, after standard error is
  back; a command that never imports TF does not pay for it."""

  def find_spec(self, name, path=None, target=None):
    if name != 'tensorflow':
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
      return None
    exec_module = spec.loader.exec_module

    def quiet_exec_module(module):
      sys.stderr.flush()
      saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
      try:
        os.dup2(null, 2)
        exec_module(module)
      finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)

    spec.loader.exec_module = quiet_exec_module
    return spec


def default_platforms(environ: Optional[Mapping[str, str]] = None,
                      device_files: Optional[Sequence[str]] = None,
                      installed: Optional[Callable[[str], bool]] = None) -> Optional[str]:
  """The `jax_platforms` to set, or None to leave jax's own choice.

  None when the user set `JAX_PLATFORMS`, when libtpu is not installed (jax then probes
  nothing noisy), or when the machine has a TPU (`/dev/accel*` or `/dev/vfio`).
  Otherwise 'cuda,cpu' when a GPU (`/dev/nvidiactl`) and a jax CUDA plugin are there,
  else 'cpu'. `device_files` (default: those of /dev named above) and `installed` are
  for tests.
  """
  environ = os.environ if environ is None else environ
  if device_files is None:
    device_files = glob.glob('/dev/accel*') + glob.glob('/dev/vfio') + glob.glob(
        '/dev/nvidiactl')
  installed = installed or (lambda name: importlib.util.find_spec(name) is not None)
  if environ.get('JAX_PLATFORMS') or not installed('libtpu'):
    return None
  names = [os.path.basename(f) for f in device_files]
  if any(n.startswith('accel') or n == 'vfio' for n in names):
    return None
  if 'nvidiactl' in names and any(installed(p) for p in CUDA_PLUGINS):
    return 'cuda,cpu'
  return 'cpu'


def use_default_platforms() -> Optional[str]:
  """Sets `jax_platforms` to `default_platforms()` (when that is not None); returns it.
  Call before anything asks jax for a device."""
  platforms = default_platforms()
  if platforms is not None:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_platforms', platforms)
  return platforms


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
  """`progress(step, scalars)` logs `step 4/6  2.10 steps/s  ETA 0:00:01  ebm_loss=...`:
  the rate since the previous call (the first call's includes compilation), and every
  scalar whose name ends in `loss`."""

  def __init__(self, total_steps: int, start_step: int = 0, clock=time.monotonic):
    self.total = int(total_steps)
    self._clock = clock
    self._last = (int(start_step), clock())

  def line(self, step: int, scalars: Mapping[str, float]) -> str:
    now = self._clock()
    last_step, last_time = self._last
    self._last = (int(step), now)
    rate = (step - last_step) / max(now - last_time, 1e-9)
    eta = _duration((self.total - step) / rate) if rate > 0 else '?'
    losses = '  '.join(f'{k}={float(v):.4g}' for k, v in sorted(scalars.items())
                       if k.endswith('loss'))
    return (f'step {step}/{self.total}  {rate:.2f} steps/s  ETA {eta}'
            + (f'  {losses}' if losses else ''))

  def __call__(self, step: int, scalars: Dict[str, float]) -> None:
    logging.info('%s', self.line(step, scalars))


EXIT_USER_ERROR = 2


class UserError(Exception):
  """A mistake of the user (command line, config, files): one line, exit 2."""


@functools.lru_cache(maxsize=None)
def _user_type(base: Type[BaseException]) -> Type[UserError]:
  if issubclass(base, UserError):
    return base
  return type(f'User{base.__name__}', (UserError, base), {'__module__': __name__})


def user_error(e: BaseException) -> UserError:
  """`e` as a UserError that is still an instance of `type(e)`, with the same message."""
  if isinstance(e, UserError):
    return e
  try:
    new = _user_type(type(e))(*e.args)
  except TypeError:  # a constructor with other arguments, or a layout that cannot mix
    new = UserError(str(e))
  new.__cause__ = e.__cause__
  return new


@contextlib.contextmanager
def user_errors(*types: Type[BaseException]):
  """Re-raises exceptions of `types` raised inside the block as user errors."""
  try:
    yield
  except types as e:
    raise user_error(e) from e


def message(e: BaseException) -> str:
  """The text printed for a user error: `error: ...`, lines after the first indented."""
  text = str(e).strip() or type(e).__name__
  if isinstance(e, KeyError) and len(e.args) == 1 and isinstance(e.args[0], str):
    text = e.args[0]  # str(KeyError) adds quotes
  first, *rest = text.splitlines()
  return '\n'.join([f'error: {first}'] + [f'  {line.strip()}' for line in rest
                                          if line.strip()])


def flag_error_message(e: BaseException, argv: Sequence[str]) -> Optional[str]:
  """The user error behind an exception of absl flag parsing, or None if it is not one.

  Covers absl's own errors (an unknown flag, a value of the wrong type, a required flag
  missing) and those of `ml_collections.config_flags`: an unknown `--config.<key>`
  (an AttributeError or KeyError carrying ml_collections' "Did you mean") and a config
  file that does not load (an OSError, raised at parsing or at the config's first use).
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  if isinstance(e, flags.Error):
    return f'{e} (see --helpfull)'
  text = str(e.args[0]) if e.args else str(e)
  if isinstance(e, (AttributeError, KeyError)) and any(
      a.startswith('--config.') for a in argv):
    key = re.search(r"'+([^'\\]+)", text)
    hint = re.search(r'Did you mean "([^"]+)"', text)
    name = key.group(1) if key else text.splitlines()[0]
    overrides = [a for a in argv if a.startswith(f'--config.{name}')]
    return (f'Unknown config key {name!r}'
            + (f' in {overrides[0]}' if overrides else '') + '. '
            + (f'Did you mean {hint.group(1)!r}? ' if hint else '')
            + 'The known keys are those of hat_ebm_jax/config_lib.py:base_config().')
  if isinstance(e, OSError) and 'Failed loading config file' in text:
    reason = text.strip().splitlines()[-1].strip()
    return (f'Cannot load the config file: {reason}. Pass --config=PATH of a config '
            'file, e.g. --config=configs/tiny.py.')
  return None


def _verbose(argv: Sequence[str]) -> bool:
  return any(a in ('--verbose', '--verbose=true', '--verbose=True') for a in argv)


def _fail(text: str) -> None:
  sys.stderr.write(text.rstrip('\n') + '\n')
  sys.stderr.flush()
  sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    text = flag_error_message(e, argv)
    if text is None or _verbose(argv):
      raise
    _fail(message(UserError(text)))


def run(main: Callable, argv: Optional[Sequence[str]] = None) -> None:
  """`absl.app.run(main)` with user errors as one line and exit code 2.

  Defines the `--verbose` flag (show every traceback) if no one has. Before `main`, picks
  jax's platforms on a TPU-less machine with libtpu and hides library log lines below
  WARNING unless `--verbosity=1` (below).
  """
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if 'verbose' not in flags.FLAGS:
    flags.DEFINE_bool('verbose', False, 'Show the traceback of a user error too.')

  def wrapped(args):
    use_default_platforms()
    quiet_logging(verbose='verbosity' in flags.FLAGS and flags.FLAGS.verbosity >= 1)
    try:
      return main(args)
    except (UserError, app.UsageError) as e:
      if flags.FLAGS.verbose:
        raise
      _fail(message(e))
    except OSError as e:  # a config file that did not load, met at its first use
      text = flag_error_message(e, sys.argv)
      if text is None or flags.FLAGS.verbose:
        raise
      _fail(message(UserError(text)))

  app.run(wrapped, argv=list(argv) if argv is not None else None,
          flags_parser=_parse_flags)


def exit_on_user_error(main: Callable[[], None]) -> None:
  """Calls `main()` (an argparse entry point reading sys.argv) with user errors as one
  line and exit code 2; `--verbose` anywhere on the command line shows the traceback."""
  verbose = _verbose(sys.argv[1:])
  sys.argv = [a for a in sys.argv if not _verbose([a])]
  try:
    main()
  except UserError as e:
    if verbose:
      raise
    _fail(message(e))

