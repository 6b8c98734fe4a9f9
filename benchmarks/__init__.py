"""Benchmarks: speed with `python -m benchmarks.langevin` (this package) and
`python -m benchmarks.tf_reference` (the original algorithm in TF2); mixed precision's
effect on a trained model with `python -m benchmarks.mixed_precision`; the paper's tables
on digits over seeds with `python -m benchmarks.paper_digits`; OOD over a run's
checkpoints with `python -m benchmarks.ood_checkpoints`."""

import ast
import json
from typing import Any, Callable, Dict, Sequence, Tuple

Line = Dict[str, Any]


def emitter(path: str) -> Callable[[Line], Line]:
  """`emit(line)`: prints `line` as one JSON line and appends it to `path` if given."""
  def emit(line: Line) -> Line:
    text = json.dumps(line, sort_keys=True)
    print(text, flush=True)
    if path:
      with open(path, 'a') as f:
        f.write(text + '\n')
    return line
  return emit


def parse_override(text: str) -> Tuple[str, Any]:
  """'KEY=VALUE' -> (key, value): a Python literal, else the string."""
  key, sep, value = text.partition('=')
  if not sep or not key:
    raise ValueError(f'--override {text!r}: give KEY=VALUE, e.g. num_ood_samples=200.')
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def override_values(config, overrides: Sequence[str]) -> Dict[str, Any]:
  """`{key: value}` of the `--override KEY=VALUE` flags; a ValueError names the keys
  `config` does not have."""
  values = dict(parse_override(o) for o in overrides)
  unknown = sorted(set(values) - set(config.keys()))
  if unknown:
    raise ValueError(f'--override: unknown config key(s) {unknown}.')
  return values
