"""Checks documented command lines against their modules' own flag parsers, without running
them.

For a command `python -m <module> <args>`, the module runs as `__main__` with `<args>` on its
command line up to the moment it parses its flags (absl's `FLAGS(argv)`, or argparse's
`parse_args`); the parse happens for real, and then the run stops before the module's
`main` does anything. So each `--flag` must be one the module defines (with a value of its
type, and every required flag given), `--config=configs/x.py[:arg]` must load, and each
`--config.key=value` must be a key of that config (ml_collections' override flags), exactly
as when a user runs the command.

The launch scripts pass their flags on to `python -m hat_ebm_jax.main`: those flags are
checked as that command's (`main_argv`).

`check(commands)` runs every check in one subprocess (`python -m tests.flag_check`, the
commands as JSON on stdin): a module run as `__main__` defines its flags again, which would
clash with a pytest process that imported it. The flags each check defined are removed
before the next one.
"""

import argparse
import json
import os
import runpy
import shlex
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The packages whose modules are checked (`python -m pytest` and `pip` are other projects').
PACKAGES = ('hat_ebm_jax', 'benchmarks')

# Launch scripts: the `python -m hat_ebm_jax.main` flags start after this argument.
LAUNCHERS = {'launch/tpu_pod.sh': '--', 'launch/local_multiprocess.sh': '--',
             'launch/slurm_gpu.sbatch': 'launch/slurm_gpu.sbatch'}


def main_argv(command: str) -> Optional[Tuple[str, List[str]]]:
  """`(module, args)` of a command whose flags can be checked, else None (`pip`,
  `tensorboard`, `python -m pytest`, ...): `python -m <module> <args>` for a module of
  PACKAGES, or a launch script's flags for `hat_ebm_jax.main`."""
  argv = shlex.split(command, comments=True)
  if len(argv) >= 3 and argv[0] in ('python', 'python3') and argv[1] == '-m':
    return (argv[2], argv[3:]) if argv[2].split('.')[0] in PACKAGES else None
  for script, marker in LAUNCHERS.items():
    if script in argv:
      rest = argv[argv.index(script):]
      if marker in rest:
        return 'hat_ebm_jax.main', rest[rest.index(marker) + 1:]
  return None


class _Parsed(BaseException):
  """The flags parsed: stop the module here (BaseException: no `except Exception` of the
  module catches it)."""


class _Rejected(BaseException):

  def __init__(self, message: str):
    super().__init__(message)
    self.message = message


def is_synopsis(command: str) -> bool:
  """A usage line (`--a=NAME [--b=N]`): its flags are checked by name only."""
  return '[' in command


def flag_names(args: Sequence[str]) -> List[str]:
  """The names of the `--name[=value]` flags among `args`, brackets stripped."""
  names = []
  for a in args:
    a = a.strip('[]')
    if a.startswith('--'):
      names.append(a[2:].split('=', 1)[0])
  return names


def _unknown(names: Sequence[str], known) -> Optional[str]:
  known = set(known)
  bad = [n for n in names  # --noX of a boolean; --config.key of a config flag
         if n not in known and not (n.startswith('no') and n[2:] in known)
         and n.split('.', 1)[0] not in known]
  return f'unknown flags: {", ".join("--" + n for n in bad)}' if bad else None


def check_in_process(module: str, args: Sequence[str],
                     names_only: bool = False) -> Optional[str]:
  """Runs `module` as `__main__` with `args` until its flags parse. None if they do, else
  the parser's message. With `names_only` (a usage synopsis), only the flags' names are
  checked, against those the module defines. Leaves no flag defined that was not before."""
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  import absl.logging  # pylint: disable=g-import-not-at-top,unused-import
  app.define_help_flags()
  fv = flags.FLAGS
  before = set(fv)
  flag_values_type = type(fv)
  absl_call = flag_values_type.__call__
  parser_type = argparse.ArgumentParser
  parse_args, error = parser_type.parse_args, parser_type.error

  def absl_parse(self, argv, known_only=False):
    if self is not fv:
      return absl_call(self, argv, known_only)
    if names_only:
      bad = _unknown(flag_names(args), fv)
      raise _Rejected(bad) if bad else _Parsed()
    try:
      absl_call(self, argv, known_only)
      for name in set(fv) - before:  # a config file that did not load fails at first use
        getattr(getattr(fv, name), 'lock', None)
    except Exception as e:  # pylint: disable=broad-except
      raise _Rejected(f'{type(e).__name__}: {e}') from None
    raise _Parsed()

  def argparse_parse(self, args=None, namespace=None):
    if names_only:
      known = [s[2:] for a in self._actions for s in a.option_strings if s.startswith('--')]
      bad = _unknown(flag_names(args_given), known)
      raise _Rejected(bad) if bad else _Parsed()
    _, extra = self.parse_known_args(args, namespace)
    if extra:
      raise _Rejected(f'unrecognized arguments: {" ".join(extra)}')
    raise _Parsed()

  def argparse_error(self, message):
    raise _Rejected(message)

  args_given = list(args)
  saved_argv = sys.argv
  flag_values_type.__call__ = absl_parse
  parser_type.parse_args, parser_type.error = argparse_parse, argparse_error
  sys.argv = [module] if names_only else [module, *args]
  try:
    runpy.run_module(module, run_name='__main__', alter_sys=True)
    result = f'{module} ran to its end without parsing its command line'
  except _Parsed:
    result = None
  except _Rejected as e:
    result = e.message
  except SystemExit as e:
    result = f'{module} exited ({e.code}) before its flags parsed'
  except Exception as e:  # pylint: disable=broad-except
    result = f'{module} failed before its flags parsed: {type(e).__name__}: {e}'
  finally:
    sys.argv = saved_argv
    flag_values_type.__call__ = absl_call
    parser_type.parse_args, parser_type.error = parse_args, error
    for name in set(fv) - before:
      delattr(fv, name)
    fv.unparse_flags()
  return result


def check(commands: Sequence[str], timeout: float = 300) -> Dict[str, Optional[str]]:
  """`{command: None if its flags parse, else why not}` for the commands `main_argv`
  can check (the others are left out)."""
  checkable = [c for c in dict.fromkeys(commands) if main_argv(c) is not None]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', JAX_PLATFORMS='cpu',
             PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  p = subprocess.run([sys.executable, '-m', 'tests.flag_check'], input=json.dumps(checkable),
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
  lines = [l for l in p.stdout.splitlines() if l.startswith('{')]
  assert p.returncode == 0 and lines, f'flag_check failed ({p.returncode}):\n{p.stderr[-4000:]}'
  return json.loads(lines[-1])


if __name__ == '__main__':
  out = {}
  for command in json.load(sys.stdin):
    module, args = main_argv(command)
    out[command] = check_in_process(module, args, names_only=is_synopsis(command))
  print(json.dumps(out))
