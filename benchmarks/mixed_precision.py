"""Mixed precision against float32 on a training run's final metric, as JSON lines.

    python -m benchmarks.mixed_precision --seeds=0,1,2,3 --parallel=3 --workdir=runs/precision

Trains `--config` (default: the digits quickstart, `configs/digits.py`) once per seed and
network dtype (`--dtypes`, default float32 and bfloat16) exactly as a user does, through
`python -m hat_ebm_jax.main --config.dtype=D --config.seed=S`, each in its own workdir
`WORKDIR/<dtype>_s<seed>` (its log, appended to, beside it: `<dtype>_s<seed>.log`).
Rerunning the command resumes unfinished runs from their checkpoints; a finished run only
recomputes its final samples and metrics (the same numbers). It prints:

* `bench=precision_run`, one line per run: `dtype`, `seed`, the run's final metrics,
  `wall_s`;
* `bench=precision`, one summary line: per dtype the mean, min and max of `--metric`
  (default `digits_fd_hat`, the Frechet distance of `G(z) + y`; lower is better) over the
  seeds, and for every other dtype `rel_change` (its mean against float32's, positive =
  worse), `rel_change_per_seed` and `within` (`rel_change <= --max_rel_change`, default
  0.05).

Seeds matter: on digits `digits_fd_hat` spreads by about 15% between seeds in either
dtype, so compare means over several seeds. `--parallel N` runs N trainings at once (the
digits nets are small: on the 2-core CI machine 3 digits runs at once trained about 1.3x
as many steps per second in all as one run alone). `--smoke`: 2 training steps, 64 final
samples, seed 0.
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import benchmarks
from hat_ebm_jax import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_FIELDS = ('bench', 'dtype', 'seed', 'workdir', 'wall_s')  # the rest: final metrics
SMOKE_OVERRIDES = ('num_training_steps=2', 'mcmc_steps=2', 'plot_freq=2',
                   'num_final_samples=64')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', default='digits',
                 help='configs/<name>.py, or a path to a config file')
  p.add_argument('--workdir', required=True, help='one workdir per run is made under it')
  p.add_argument('--dtypes', default='float32,bfloat16',
                 help='comma list of network dtypes; the first is the reference')
  p.add_argument('--seeds', default='0,1,2,3', help='comma list of config.seed values')
  p.add_argument('--metric', default='digits_fd_hat',
                 help='key of final_metrics.json to compare (lower is better)')
  p.add_argument('--max_rel_change', type=float, default=0.05,
                 help='largest allowed relative increase of the mean metric')
  p.add_argument('--parallel', type=int, default=1, help='trainings run at once')
  p.add_argument('--override', action='append', default=[],
                 help='extra KEY=VALUE config override for every run (repeatable)')
  p.add_argument('--out', default='', help='also append the JSON lines to this file')
  p.add_argument('--smoke', action='store_true',
                 help='tiny runs (2 steps, seed 0); checks the output lines')
  args = p.parse_args(argv)
  if args.smoke:
    args.seeds = '0'
    args.override = list(SMOKE_OVERRIDES) + args.override
  args.dtypes = [d for d in args.dtypes.split(',') if d]
  args.seeds = [int(s) for s in args.seeds.split(',') if s]
  if len(args.dtypes) < 2 or not args.seeds:
    p.error('need at least two --dtypes and one seed')
  if args.parallel < 1:
    p.error('--parallel must be >= 1')
  return args


def config_path(name: str) -> str:
  """`configs/<name>.py` of this repository, or `name` itself if it is a file."""
  if os.path.isfile(name):
    return os.path.abspath(name)
  path = os.path.join(REPO, 'configs', f'{name}.py')
  if not os.path.isfile(path):
    raise cli.user_error(FileNotFoundError(
        f'No config {name!r}: neither a file nor {path}. Pass a config file or the name '
        'of one in configs/.'))
  return path


def train_once(args, dtype: str, seed: int) -> Dict[str, Any]:
  """Runs (or resumes) one training; returns its `precision_run` line."""
  workdir = os.path.join(args.workdir, f'{dtype}_s{seed}')
  argv = [sys.executable, '-m', 'hat_ebm_jax.main', f'--config={config_path(args.config)}',
          f'--workdir={workdir}', f'--config.dtype={dtype}', f'--config.seed={seed}',
          '--config.final_metrics=True'] + [f'--config.{o}' for o in args.override]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''))
  t0 = time.time()
  with open(workdir + '.log', 'a') as log:  # a resumed run's log follows the first
    proc = subprocess.run(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
  wall = time.time() - t0
  if proc.returncode:
    with open(workdir + '.log') as log:
      tail = log.read()[-3000:]
    raise RuntimeError(f'{" ".join(argv)} exited {proc.returncode}; log '
                       f'{workdir}.log ends:\n{tail}')
  path = os.path.join(workdir, 'final_metrics.json')
  if not os.path.isfile(path):
    raise cli.user_error(RuntimeError(
        f'{workdir} has no final_metrics.json: final metrics exist for digits and the 2D '
        'toys only; pick one of those configs.'))
  with open(path) as f:
    metrics = json.load(f)
  return dict(bench='precision_run', dtype=dtype, seed=seed, workdir=workdir,
              wall_s=round(wall, 1), **metrics)


def summarize(runs: List[Dict[str, Any]], args) -> Dict[str, Any]:
  """The `precision` line: the metric's mean per dtype and each dtype's change against
  the first (`args.dtypes[0]`), overall and per seed."""
  ref = args.dtypes[0]
  for r in runs:
    if args.metric not in r:
      known = sorted(k for k in r if k not in RUN_FIELDS)
      raise cli.user_error(ValueError(
          f'--metric={args.metric!r} is not among the final metrics of '
          f'{r.get("workdir", "a run")}: {known}.'))
  by = {d: {r['seed']: float(r[args.metric]) for r in runs if r['dtype'] == d}
        for d in args.dtypes}
  line: Dict[str, Any] = dict(bench='precision', config=args.config, metric=args.metric,
                              seeds=args.seeds, reference=ref,
                              max_rel_change=args.max_rel_change, dtypes={})
  ref_mean = statistics.mean(by[ref].values())
  for d in args.dtypes:
    values = [by[d][s] for s in args.seeds]
    entry = dict(mean=statistics.mean(values), min=min(values), max=max(values),
                 per_seed=values)
    if d != ref:
      entry['rel_change'] = entry['mean'] / ref_mean - 1
      entry['rel_change_per_seed'] = [by[d][s] / by[ref][s] - 1 for s in args.seeds]
      entry['within'] = entry['rel_change'] <= args.max_rel_change
    line['dtypes'][d] = entry
  return line


def check_lines(runs: List[Dict[str, Any]], summary: Dict[str, Any], args) -> None:
  """Raises AssertionError unless every run reported a finite metric and the summary
  covers every dtype and seed."""
  assert len(runs) == len(args.dtypes) * len(args.seeds), runs
  for r in runs:
    v = r[args.metric]
    assert isinstance(v, float) and v == v and abs(v) != float('inf') and v >= 0, r
  assert set(summary['dtypes']) == set(args.dtypes), summary
  for d, entry in summary['dtypes'].items():
    assert len(entry['per_seed']) == len(args.seeds), summary
    assert entry['min'] <= entry['mean'] <= entry['max'], summary
    if d != args.dtypes[0]:
      assert isinstance(entry['within'], bool), summary
  json.loads(json.dumps(summary))


def run(args) -> List[Dict[str, Any]]:
  emit = benchmarks.emitter(args.out)
  os.makedirs(args.workdir, exist_ok=True)
  jobs = [(d, s) for s in args.seeds for d in args.dtypes]
  with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
    runs = [emit(r) for r in pool.map(lambda job: train_once(args, *job), jobs)]
  summary = emit(summarize(runs, args))
  if args.smoke:
    check_lines(runs, summary, args)
  return runs + [summary]


def main(argv: Optional[List[str]] = None) -> None:
  run(parse_args(argv))


if __name__ == '__main__':
  cli.exit_on_user_error(main)
