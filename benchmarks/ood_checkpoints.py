"""OOD AUROCs of a run's energy at each kept checkpoint, and of those checkpoints' average.

    python -m benchmarks.ood_checkpoints --workdir=runs/digits

For each checkpoint of the synthesis run in `--workdir` (or the `--steps` listed), read
once, the AUROC of the energy `H(x)` on each OOD set of `--config` (default `digits:eval`,
that is `configs/digits.py:eval`: noise, shuffled, inverted, constant, letters against the
300 test digits), with the raw weights and with the EMA; then the raw weights averaged uniformly over those checkpoints
(`average_states`), a longer window than the EMA's warm-up keeps at the end of a run. The
sets, the energy and the AUROC are the evaluation's own (`ood.ood_sets`,
`evaluate.energy_fn`, `metrics.ood_auroc`), so a checkpoint's row equals the `ood.md` of
`configs/digits.py:eval --config.eval_ckpt_step=STEP`. docs/evaluation.md has the figures
this gave for the digits default over seeds.

`--by_character` (digits only) also scores each character of the letters set alone: its
72 fixed draws (`glyphs.render_character`: every font, two heights, three slants, thin
and thickened) against the same test digits, for every row; and the correlation of the
energy with the ink (mean intensity) over the letters set. Low AUROCs name the glyphs the
energy takes for digits; a positive correlation says it prefers little ink.

Prints the table(s) and writes them to `WORKDIR/eval/ood_checkpoints.md` and `.json`;
the training workdir is otherwise left as it is. `--override KEY=VALUE` (repeatable) sets a
key of the evaluation config (`--override=num_ood_samples=200`).
"""

import argparse
import json
import os
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # before TensorFlow loads (tf.data)

import jax
import numpy as np
from etils import epath

from hat_ebm_jax import checkpointing, cli, config_lib, evaluate, input_pipeline, metrics, ood
from hat_ebm_jax import sharding
from hat_ebm_jax.datasets import digits, glyphs

import benchmarks
from benchmarks import mixed_precision

def with_values(config, **values):
  """A copy of `config` with `values` set (keys it has)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for k, v in values.items():
      config[k] = v
  return config


def load_config(spec: str, overrides: Sequence[str]):
  """`name[:arg]` (`configs/<name>.py`) or `path[:arg]`, with `overrides` set."""
  name, _, arg = spec.partition(':')
  config = config_lib.load_config_file(mixed_precision.config_path(name),
                                       *([arg] if arg else []))
  return with_values(config, **benchmarks.override_values(config, overrides))


def average_states(states: Sequence) -> object:
  """The elementwise mean of `TrainState`s of one structure (every leaf, float)."""
  return jax.tree_util.tree_map(lambda *a: sum(a) / len(a), *states)


def kept_steps(workdir: epath.Path) -> List[int]:
  """The steps of `workdir/checkpoints`, ascending. Raises a one-line FileNotFoundError
  when there are none."""
  manager = checkpointing.read_only_manager(workdir)
  try:
    steps = sorted(int(s) for s in manager.all_steps())
  finally:
    manager.close()
  if not steps:
    raise cli.user_error(FileNotFoundError(
        f'No checkpoint in {workdir}/checkpoints: give --workdir a training run.'))
  return steps


def ink(x: np.ndarray) -> np.ndarray:
  """`[N, H, W, C]` images in `[-1, 1]` -> `[N]`, the mean intensity in `[0, 1]`."""
  return (x.reshape(len(x), -1).mean(axis=1) + 1.0) / 2.0


def character_sets(config) -> Dict[str, np.ndarray]:
  """`{character: its 72 draws}` (`glyphs.render_character`) as model images."""
  if config.dataset != 'digits':
    raise ValueError(f'--by_character scores the letters against the digits; the config\'s '
                     f'dataset is {config.dataset!r}: leave --by_character out.')
  return {ch: digits.to_model_images(glyphs.render_character(ch), int(config.image_size))
          for ch in glyphs.CHARACTERS}


def aurocs(config, mode, state, mesh, x_in, sets: Dict, use_ema: bool,
           characters: Optional[Dict] = None) -> Dict:
  """`{set: AUROC}` of the energy with `state`'s raw or EMA weights; with `characters`
  (`character_sets`) also `characters: {character: AUROC}` and `letters_ink_corr`."""
  energy = evaluate.energy_fn(mode, state, mesh, use_ema)
  score = lambda x: evaluate.batched_apply(energy, x, int(config.eval_batch_size), mesh)
  e_in = score(x_in)
  scores = {k: score(v) for k, v in sets.items()}
  out = {k: metrics.ood_auroc(e_in, v) for k, v in scores.items()}
  if characters:
    out['characters'] = {ch: metrics.ood_auroc(e_in, score(x)) for ch, x in characters.items()}
    if 'letters' in sets:
      out['letters_ink_corr'] = float(np.corrcoef(scores['letters'], ink(sets['letters']))[0, 1])
  return out


def run(config, workdir: epath.Path, steps: Optional[Sequence[int]],
        by_character: bool = False) -> Dict:
  """Rows `{'label', 'weights', AUROCs...}` for each step (raw, EMA) and the average
  (with `by_character`, each row's `characters` and `letters_ink_corr` too). Each
  checkpoint is read once."""
  characters = character_sets(config) if by_character else None
  mesh = sharding.create_mesh()
  steps = list(steps or kept_steps(workdir))
  x_in = input_pipeline.load_array(config, config.ood_split, int(config.num_ood_samples))
  sets = ood.ood_sets(config, x_in)
  score = lambda mode, state, use_ema: aurocs(config, mode, state, mesh, x_in, sets,
                                              use_ema, characters)
  rows, states = [], []
  for step in steps:
    mode, state, _ = evaluate.load_model(
        with_values(config, eval_ckpt_step=step, use_ema=False), workdir, mesh)
    for use_ema in (False, True):
      rows.append(dict(label=f'step {step}', weights='ema' if use_ema else 'raw',
                       **score(mode, state, use_ema)))
    states.append(state)
  if len(states) > 1:
    rows.append(dict(label=f'average of steps {steps[0]}-{steps[-1]} ({len(steps)})',
                     weights='raw', **score(mode, average_states(states), False)))
  out = dict(workdir=str(workdir), steps=steps, sets=list(sets), rows=rows,
             in_distribution=f'{config.dataset}/{config.ood_split} (n={len(x_in)})')
  if characters:
    out['character_ink'] = {ch: float(ink(x).mean()) for ch, x in characters.items()}
  return out


def markdown(result: Dict) -> str:
  """The rows as a Markdown table, one column an OOD set."""
  sets = result['sets']
  lines = [f'OOD AUROC by energy against {result["in_distribution"]}, {result["workdir"]}',
           '', '| checkpoint | weights | ' + ' | '.join(sets) + ' |',
           '| --- | --- |' + ' --- |' * len(sets)]
  lines += [f'| {r["label"]} | {r["weights"]} | '
            + ' | '.join(f'{r[s]:.3f}' for s in sets) + ' |' for r in result['rows']]
  if 'character_ink' in result:
    lines += ['', character_markdown(result)]
  return '\n'.join(lines) + '\n'


def character_markdown(result: Dict) -> str:
  """Per-character AUROCs, a row a character (lowest first by the last checkpoint's raw
  weights: the glyphs most like digits), a column a row of the main table."""
  rows = result['rows']
  last = next(r for r in reversed(rows) if r['label'].startswith('step') and
              r['weights'] == 'raw')
  names = [f'{r["label"]} {r["weights"]}' for r in rows]
  lines = ['AUROC of each character alone (its 72 draws) against the same digits; ink: '
           'their mean intensity in [0, 1]', '',
           '| character | ink | ' + ' | '.join(names) + ' |',
           '| --- | --- |' + ' --- |' * len(rows)]
  for ch in sorted(last['characters'], key=lambda c: last['characters'][c]):
    lines.append(f'| `{ch}` | {result["character_ink"][ch]:.3f} | '
                 + ' | '.join(f'{r["characters"][ch]:.2f}' for r in rows) + ' |')
  if all('letters_ink_corr' in r for r in rows):
    lines.append('| the energy\'s correlation with the ink, letters set | | '
                 + ' | '.join(f'{r["letters_ink_corr"]:+.2f}' for r in rows) + ' |')
  return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--workdir', required=True, help='a synthesis training workdir')
  p.add_argument('--config', default='digits:eval',
                 help='evaluation config, configs/<name>.py or a path, with its :arg: '
                      'its OOD sets, split and batch')
  p.add_argument('--steps', default='',
                 help='comma list of checkpoint steps (default: every kept one)')
  p.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                 help='a key of the evaluation config, e.g. num_ood_samples=200')
  p.add_argument('--by_character', action='store_true',
                 help='digits only: also the AUROC of each letter alone, and the energy\'s '
                      'correlation with the ink')
  args = p.parse_args(argv)
  cli.use_default_platforms()
  cli.quiet_logging()
  with cli.user_errors(ValueError, FileNotFoundError):
    config = load_config(args.config, args.override)
    workdir = epath.Path(args.workdir)
    steps = [int(s) for s in args.steps.split(',') if s.strip()]
    result = run(config, workdir, steps, args.by_character)
  md = markdown(result)
  print(md, end='')
  out = workdir / 'eval'
  out.mkdir(parents=True, exist_ok=True)
  (out / 'ood_checkpoints.md').write_text(md)
  (out / 'ood_checkpoints.json').write_text(json.dumps(result, indent=2))


if __name__ == '__main__':
  cli.exit_on_user_error(main)
