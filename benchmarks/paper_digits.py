"""The paper's claims in miniature, offline, over seeds: one command for the suite.

    python -m benchmarks.paper_digits --seeds=0,1,2,3,4 --root=runs/paper_digits

For every seed it runs, as a user would (`python -m hat_ebm_jax.main`, one process a
stage, `--jobs` at a time), what is not done yet (a stage that finished is read back, a
stage that was stopped resumes from its checkpoint):

  1. `digits`: the offline default, `configs/digits.py` (synthesis); its final metrics
     score raw and EMA weights at 1x, 3x and 10x the training chain length;
  2. `eval`: `configs/digits.py:eval` on it: OOD detection by energy (noise, shuffled,
     inverted, constant images, rendered letters) beside the Gaussian baseline (at the
     training chain length: 1 has scored the longer chains); `eval_ema`: the same OOD
     sets with the EMA weights' energy; `eval_long`: the chains at 1x, 3x and 10x the
     training length, sampled at `LONG_RUN_MCMC_TEMP` (3x the training's `mcmc_temp`:
     a weaker energy gradient, the same noise);
  3. `refine`: `configs/digits_refine.py` on the generator of 1 (joint mode);
     `weak` then `refine_weak`: the same on a deliberately weak generator, the
     digits default stopped at `WEAK_GEN_STEPS` (the paper refines an SN-GAN that is
     far from its data; the digits default's own generator is close to it);
  4. `ae` then `retrofit`: `configs/digits_ae.py`, `configs/digits_retrofit.py` on its
     decoder.

It then writes `ROOT/paper_digits.md`: one table in the paper's form (mean ± std over the
seeds, the worst seed, every seed) and the grids, nearest-neighbour upscaled so that a
person can see them (`ROOT/grids/*.png`, of the first seed). `--smoke` runs every stage
on tiny settings (seconds of training: the plumbing, not the numbers). `--stages`
runs only some stages (say `--stages=digits,eval,refine`); the table then has the rows of
the stages that are done.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UPSCALE = 3  # 16 px digits drawn 48 px wide, as the README's grids (docs/images)
EVAL_NAME = 'paper_digits'
LONG_RUN_MCMC_TEMP = 3e-8  # eval_long's sampler temperature (configs/digits.py trains at 1e-8)

WEAK_GEN_STEPS = 300  # the weak generator's training steps (the default trains 2,250)
EVAL_STAGES = {'eval': EVAL_NAME, 'eval_ema': f'{EVAL_NAME}_ema',
               'eval_long': f'{EVAL_NAME}_long'}  # stage -> its folder under eval/
# Stage name -> (config, depends on, extra flags given the seed's folder).
STAGES = {
    'digits': ('configs/digits.py', None, lambda d: []),
    # OOD: the longer chains are scored by stage 1's final metrics already.
    'eval': ('configs/digits.py:eval', 'digits',
             lambda d: [f'--config.eval_name={EVAL_STAGES["eval"]}',
                        '--config.chain_length_factors=(1,)']),
    'eval_ema': ('configs/digits.py:eval', 'digits',
                 lambda d: [f'--config.eval_name={EVAL_STAGES["eval_ema"]}',
                            '--config.use_ema=True', '--config.num_eval_samples=0']),
    # Long chains at a higher temperature; no OOD (the energy does not depend on it).
    'eval_long': ('configs/digits.py:eval', 'digits',
                  lambda d: [f'--config.eval_name={EVAL_STAGES["eval_long"]}',
                             f'--config.mcmc_temp={LONG_RUN_MCMC_TEMP}',
                             '--config.ood_datasets=']),
    'refine': ('configs/digits_refine.py', 'digits',
               lambda d: [f'--config.gen_weights={os.path.join(d, "digits")}']),
    # A weak generator: the default's run stopped early (its final metrics at 1x only).
    'weak': ('configs/digits.py', None,
             lambda d: [f'--config.num_training_steps={WEAK_GEN_STEPS}',
                        '--config.chain_length_factors=(1,)']),
    'refine_weak': ('configs/digits_refine.py', 'weak',
                    lambda d: [f'--config.gen_weights={os.path.join(d, "weak")}']),
    'ae': ('configs/digits_ae.py', None, lambda d: []),
    'retrofit': ('configs/digits_retrofit.py', 'ae',
                 lambda d: [f'--config.gen_weights={os.path.join(d, "ae")}']),
}
JOINT_STAGES = ('refine', 'refine_weak', 'retrofit')  # joint mode: G(z) against G(z) + y
# Tiny settings for --smoke, per stage (the configs' nets, a few steps, few samples).
SMOKE_TRAIN = ['--config.num_training_steps=2', '--config.mcmc_steps=2',
               '--config.num_final_samples=64', '--config.log_freq=1',
               '--config.plot_freq=2', '--config.checkpoint_freq=2']
SMOKE = {
    'digits': SMOKE_TRAIN + ['--config.chain_length_factors=(1,3)'],
    'eval': ['--config.mcmc_steps=2', '--config.num_eval_samples=128',
             '--config.num_ood_samples=40'],
    'eval_ema': ['--config.num_ood_samples=40'],
    'eval_long': ['--config.mcmc_steps=2', '--config.num_eval_samples=128',
                  '--config.chain_length_factors=(1,3)'],
    'refine': SMOKE_TRAIN,
    'weak': SMOKE_TRAIN,  # its chain_length_factors=(1,) comes from STAGES (a tuple flag
                          # given twice would be read as (1, 1))
    'refine_weak': SMOKE_TRAIN,
    'ae': ['--config.num_epochs=1', '--config.steps_per_epoch=2', '--config.test_steps=1',
           '--config.num_training_steps=2', '--config.plot_freq=2',
           '--config.checkpoint_freq=2'],
    'retrofit': SMOKE_TRAIN,
}


def workdir(root: str, seed: int, stage: str) -> str:
  """The folder of a stage: `ROOT/seed<S>/<stage>`; the evaluations
  write into the digits run's `eval/paper_digits*/`."""
  name = 'digits' if stage in EVAL_STAGES else stage
  return os.path.join(root, f'seed{seed}', name)


def result_file(root: str, seed: int, stage: str) -> str:
  """The file whose presence says a stage is done."""
  d = workdir(root, seed, stage)
  if stage in EVAL_STAGES:
    return os.path.join(d, 'eval', EVAL_STAGES[stage], 'results.json')
  if stage == 'ae':
    return os.path.join(d, 'samples', 'final.npz')
  return os.path.join(d, 'final_metrics.json')


def command(root: str, seed: int, stage: str, smoke: bool) -> List[str]:
  cfg, _, extra = STAGES[stage]
  return ([sys.executable, '-m', 'hat_ebm_jax.main', f'--config={cfg}',
           f'--workdir={workdir(root, seed, stage)}', f'--config.seed={seed}']
          + extra(os.path.join(root, f'seed{seed}')) + (SMOKE[stage] if smoke else []))


def run_all(root: str, seeds: Sequence[int], jobs: int, smoke: bool,
            stages: Sequence[str] = tuple(STAGES)) -> Dict[str, float]:
  """Runs every stage of `stages` not done yet, `jobs` processes at a time, each after
  the stage it depends on. Returns `{'<stage>_seed<S>': wall seconds}` of the stages run
  now (also kept in `ROOT/timings.json`). Exits with the log's tail when a stage fails."""
  timings_path = os.path.join(root, 'timings.json')
  timings = json.load(open(timings_path)) if os.path.exists(timings_path) else {}
  todo = [(s, st) for s in seeds for st in stages
          if not os.path.exists(result_file(root, s, st))]
  running: Dict[tuple, tuple] = {}
  while todo or running:
    for key, (proc, t0, log) in list(running.items()):
      if proc.poll() is None:
        continue
      del running[key]
      log.close()
      if proc.returncode:
        tail = open(log.name).read()[-3000:]
        sys.exit(f'{key[1]} (seed {key[0]}) failed with exit code {proc.returncode}; '
                 f'log {log.name}:\n{tail}')
      timings[f'{key[1]}_seed{key[0]}'] = time.time() - t0
      with open(timings_path, 'w') as f:
        json.dump(timings, f, indent=2, sort_keys=True)
    ready = [t for t in todo if STAGES[t[1]][1] is None or (
        (t[0], STAGES[t[1]][1]) not in running and
        os.path.exists(result_file(root, t[0], STAGES[t[1]][1])))]
    while ready and len(running) < jobs:
      seed, stage = key = ready.pop(0)
      todo.remove(key)
      os.makedirs(os.path.join(root, f'seed{seed}'), exist_ok=True)
      log = open(os.path.join(root, f'seed{seed}', f'{stage}.log'), 'w')
      print(f'[paper_digits] seed {seed}: {stage}', flush=True)
      proc = subprocess.Popen(command(root, seed, stage, smoke), cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT)
      running[key] = (proc, time.time(), log)
    time.sleep(1.0)
  return timings


# ------------------------------------------------------------------ the table


def _load(path: str) -> Dict:
  with open(path) as f:
    return json.load(f)


def seed_figures(root: str, seed: int) -> Dict[str, float]:
  """`{row name: value}` of one seed, from its stages' `final_metrics.json` and
  `results.json` (a stage that was not run has no rows)."""
  out = {}
  if os.path.exists(result_file(root, seed, 'digits')):
    digits = _load(result_file(root, seed, 'digits'))
    out.update({k: v for k, v in digits.items()
                if k.startswith(('digits_fd_', 'digits_pca_fd_'))})
    out['hat_over_floor'] = digits['digits_fd_hat'] / digits['digits_fd_floor']
    if 'digits_fd_hat_3x' in digits:
      out['hat_3x_over_1x'] = digits['digits_fd_hat_3x'] / digits['digits_fd_hat']
  for stage in JOINT_STAGES:
    if not os.path.exists(result_file(root, seed, stage)):
      continue
    m = _load(result_file(root, seed, stage))
    out[f'{stage}_gen'], out[f'{stage}_hat'] = m['digits_fd_gen'], m['digits_fd_hat']
    out[f'{stage}_change'] = m['digits_fd_hat'] / m['digits_fd_gen'] - 1.0
  for stage, prefix in (('eval', 'ood'), ('eval_ema', 'ood_ema')):
    ev_path = result_file(root, seed, stage)
    ev = _load(ev_path) if os.path.exists(ev_path) else {}
    for name, row in ev.get('ood', {}).get('table', {}).items():
      out[f'{prefix}_{name}'] = row['auroc']
      out[f'ood_{name}_baseline'] = row['auroc_baseline']  # the same in both
  long_path = result_file(root, seed, 'eval_long')
  if os.path.exists(long_path):
    m = _load(long_path)['metrics']
    out.update({f'long_{k}': v for k, v in m.items() if k.startswith('digits_fd_hat')})
    if 'digits_fd_hat_3x' in m:
      out['long_hat_3x_over_1x'] = m['digits_fd_hat_3x'] / m['digits_fd_hat']
  timings_path = os.path.join(root, 'timings.json')
  if os.path.exists(timings_path):
    t = _load(timings_path).get(f'digits_seed{seed}')
    if t:
      out['digits_minutes'] = t / 60.0
  return out


_LONG_TEMP = f'{LONG_RUN_MCMC_TEMP:g}'.replace('e-0', 'e-')  # '3e-8'
# (row key, label, worst is the max (True) or the min (False), format)
ROWS = [
    ('digits_fd_floor', 'digits_fd, held-out real digits (floor)', True, '.2f'),
    ('digits_fd_gen', 'digits_fd, G(z)', True, '.2f'),
    ('digits_fd_hat', 'digits_fd, G(z) + y (Hat EBM, raw weights)', True, '.2f'),
    ('digits_fd_hat_ema', 'digits_fd, G(z) + y, EMA weights', True, '.2f'),
    ('hat_over_floor', 'G(z) + y / floor (bar: <= 1.5)', True, '.2f'),
    ('digits_pca_fd_floor', 'second judge (pixel-PCA FD), floor', True, '.2f'),
    ('digits_pca_fd_hat', 'second judge, G(z) + y', True, '.2f'),
    ('digits_pca_fd_hat_ema', 'second judge, G(z) + y, EMA', True, '.2f'),
    ('digits_fd_hat_3x', 'digits_fd, G(z) + y, chains 3x as long', True, '.2f'),
    ('digits_fd_hat_10x', 'digits_fd, G(z) + y, chains 10x as long', True, '.2f'),
    ('hat_3x_over_1x', '3x / 1x (bar: <= 1.25)', True, '.2f'),
    ('digits_fd_hat_ema_3x', 'digits_fd, EMA, 3x', True, '.2f'),
    ('digits_fd_hat_ema_10x', 'digits_fd, EMA, 10x', True, '.2f'),
    ('long_digits_fd_hat', f'digits_fd, G(z) + y at mcmc_temp {_LONG_TEMP} '
     '(evaluation only), 1x', True, '.2f'),
    ('long_digits_fd_hat_3x', f'digits_fd at mcmc_temp {_LONG_TEMP}, 3x', True,
     '.2f'),
    ('long_digits_fd_hat_10x', f'digits_fd at mcmc_temp {_LONG_TEMP}, 10x', True,
     '.2f'),
    ('long_hat_3x_over_1x', f'3x / 1x at mcmc_temp {_LONG_TEMP} (bar: <= 1.25)',
     True, '.2f'),
    ('digits_minutes', 'digits run, wall minutes (this machine, --jobs at once)', True, '.1f'),
    ('refine_gen', 'refinement: digits_fd of G(z), the pretrained generator', True, '.2f'),
    ('refine_hat', 'refinement: digits_fd of the refined samples', True, '.2f'),
    ('refine_change', 'refinement: change (bar: <= -25%)', True, '+.0%'),
    ('refine_weak_gen', f'refinement of a weak generator ({WEAK_GEN_STEPS} steps): '
     'digits_fd of G(z)', True, '.2f'),
    ('refine_weak_hat', 'refinement of the weak generator: digits_fd of the refined '
     'samples', True, '.2f'),
    ('refine_weak_change', 'refinement of the weak generator: change (bar: <= -25%)', True,
     '+.0%'),
    ('retrofit_gen', 'retrofit: digits_fd of the decoder on prior latents', True, '.2f'),
    ('retrofit_hat', 'retrofit: digits_fd of the retrofit samples', True, '.2f'),
    ('retrofit_change', 'retrofit: change', True, '+.0%'),
]
OOD_SETS = ('noise', 'shuffled', 'inverted', 'constant', 'letters')
for _name in OOD_SETS:
  ROWS += [(f'ood_{_name}', f'OOD AUROC by energy: {_name}', False, '.3f'),
           (f'ood_ema_{_name}', f'OOD AUROC by energy, EMA weights: {_name}', False,
            '.3f'),
           (f'ood_{_name}_baseline', f'OOD AUROC, Gaussian-NLL baseline: {_name}', False,
            '.3f')]


def table(figures: Dict[int, Dict[str, float]]) -> str:
  """The Markdown table: one row per figure, mean ± std, worst, one column a seed."""
  seeds = sorted(figures)
  lines = ['| | mean ± std | worst | ' + ' | '.join(f'seed {s}' for s in seeds) + ' |',
           '| --- | --- | --- | ' + ' | '.join('---' for _ in seeds) + ' |']
  for key, label, worst_is_max, fmt in ROWS:
    vals = [figures[s].get(key) for s in seeds]
    if all(v is None for v in vals):
      continue
    have = np.array([v for v in vals if v is not None], np.float64)
    worst = have.max() if worst_is_max else have.min()
    lines.append(f'| {label} | {have.mean():{fmt}} ± {have.std():{fmt}} | {worst:{fmt}} | '
                 + ' | '.join('' if v is None else f'{v:{fmt}}' for v in vals) + ' |')
  return '\n'.join(lines) + '\n'


# ------------------------------------------------------------------ grids


def upscaled_grid(images: np.ndarray, n: int = 64, scale: int = UPSCALE) -> np.ndarray:
  """The first `n` images `[N, H, W, C]` in `[-1, 1]` as a uint8 grid, each pixel drawn
  `scale` x `scale` (nearest neighbour)."""
  from hat_ebm_jax import visualize  # pylint: disable=g-import-not-at-top
  grid = visualize.image_grid(np.clip(images[:n], -1, 1), 8)
  return np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)


def write_grids(root: str, seed: int) -> List[str]:
  """`ROOT/grids/<name>.png` for the first seed: of the stages that are done, the
  default's samples (1x, 3x, 10x, G(z)), its chains at `LONG_RUN_MCMC_TEMP` (`long_hat_3x`,
  `long_hat_10x`), both refinements (G(z) against refined, same
  latents), retrofit (decoder on prior latents against retrofit); and the rendered
  letters. Returns the file names."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out_dir = os.path.join(root, 'grids')
  os.makedirs(out_dir, exist_ok=True)
  picks = {}
  for stage in ('digits',) + JOINT_STAGES:
    path = os.path.join(workdir(root, seed, stage), 'samples', 'final.npz')
    if not os.path.exists(path):
      continue
    with np.load(path) as f:
      picks.update({f'{stage}_gen': f['gen'], f'{stage}_hat': f['hat']})
      if stage == 'digits':
        picks.update({f'digits_{k}': f[k] for k in ('hat_3x', 'hat_10x') if k in f.files})
  long_path = os.path.join(os.path.dirname(result_file(root, seed, 'eval_long')),
                           'samples.npz')
  if os.path.exists(long_path):
    with np.load(long_path) as f:
      picks.update({f'long_{k}': f[k] for k in ('hat_3x', 'hat_10x') if k in f.files})
  from hat_ebm_jax.datasets import digits, glyphs  # pylint: disable=g-import-not-at-top
  picks['ood_letters'] = digits.to_model_images(glyphs.render(64, np.random.default_rng(0)),
                                                16)
  names = []
  for name, images in picks.items():
    grid = upscaled_grid(images)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(
        os.path.join(out_dir, f'{name}.png'))
    names.append(f'{name}.png')
  return names


def report(root: str, seeds: Sequence[int], smoke: bool) -> str:
  figures = {s: seed_figures(root, s) for s in seeds}
  grids = write_grids(root, seeds[0])
  md = [f'# Hat EBM on the offline default, seeds {", ".join(map(str, seeds))}'
        + (' (smoke: tiny settings, the numbers mean nothing)' if smoke else ''), '',
        '`python -m benchmarks.paper_digits --seeds=' + ','.join(map(str, seeds)) + '`',
        '', table(figures), f'Grids (seed {seeds[0]}, {UPSCALE}x nearest neighbour): '
        + ', '.join(f'[{g}](grids/{g})' for g in grids), '']
  text = '\n'.join(md)
  with open(os.path.join(root, 'paper_digits.md'), 'w') as f:
    f.write(text)
  with open(os.path.join(root, 'paper_digits.json'), 'w') as f:
    json.dump({str(s): v for s, v in figures.items()}, f, indent=2, sort_keys=True)
  return text


def main(argv: Optional[Sequence[str]] = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--seeds', default='0,1,2,3,4', help='comma-separated seeds')
  p.add_argument('--root', default='runs/paper_digits', help='where the runs go')
  p.add_argument('--jobs', type=int, default=1, help='stages run at once')
  p.add_argument('--stages', default=','.join(STAGES),
                 help='comma-separated stages to run (default all): ' + ', '.join(STAGES))
  p.add_argument('--smoke', action='store_true', help='tiny settings: the plumbing only')
  args = p.parse_args(argv)
  stages = [s.strip() for s in args.stages.split(',') if s.strip()]
  unknown = sorted(set(stages) - set(STAGES))
  if unknown or not stages:
    sys.exit(f'--stages: unknown stage(s) {unknown}; choose from {", ".join(STAGES)}.')
  missing = sorted({STAGES[s][1] for s in stages} - set(stages) - {None})
  try:
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
  except ValueError:
    sys.exit(f'--seeds must be comma-separated integers, e.g. 0,1,2; got {args.seeds!r}.')
  if not seeds or args.jobs < 1:
    sys.exit('--seeds needs at least one seed and --jobs must be >= 1.')
  root = os.path.abspath(args.root)
  for dep in missing:  # a stage whose input is not listed needs it done already
    if not all(os.path.exists(result_file(root, s, dep)) for s in seeds):
      sys.exit(f'--stages: {", ".join(s for s in stages if STAGES[s][1] == dep)} needs '
               f'{dep!r}, which is neither listed nor done under {root}; add it.')
  run_all(root, seeds, args.jobs, args.smoke, stages)
  print(report(root, seeds, args.smoke))


if __name__ == '__main__':
  main()
