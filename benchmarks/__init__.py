"""Benchmarks: speed with `python -m benchmarks.langevin` (this package) and
`python -m benchmarks.tf_reference` (the original algorithm in TF2); mixed precision's
effect on a trained model with `python -m benchmarks.mixed_precision`; the paper's tables
on digits over seeds with `python -m benchmarks.paper_digits`; OOD over a run's
checkpoints with `python -m benchmarks.ood_checkpoints`."""

import json
from typing import Any, Callable, Dict

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
