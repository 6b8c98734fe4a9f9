"""Pretrained weights: loading them for a net (`load_pretrained`), saving them
(`save_pretrained`), and the command that converts the authors' TF checkpoints.

    python -m hat_ebm_jax.pretrained --tf_checkpoint=PREFIX --net=NAME [--ngf=N] --out=DIR

writes a pretrained-weights directory: `net.json` (the net's name and `create` keyword
arguments, `models.net_kwargs`) and an orbax `variables/` checkpoint. Widths not given are
read off the TF checkpoint (`convert.from_tf_checkpoint`).

Pretrained weights (`config.gen_weights`, `config.ebm_weights`) may be any of:
  * a directory written by `save_pretrained` (this command, `hat_ebm_jax.toy`);
  * a TF checkpoint prefix of the authors' code (`.../ckpt`, with `ckpt.index` beside);
  * an autoencoder run's workdir (its latest checkpoint's decoder: how retrofit is
    chained after `cifar10_ae`), or a synthesis run's workdir (its latest checkpoint's
    generator, raw weights: how `configs/digits_refine.py` refines the digits default).
"""

import json
from typing import Dict

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from hat_ebm_jax import checkpointing, cli, convert, models


def save_pretrained(out_dir: str, net: str, net_kwargs: Dict, variables: Dict) -> str:
  """Writes `net.json` + an orbax `variables/` checkpoint. Refuses a non-empty `out_dir`."""
  out = epath.Path(out_dir)
  if out.exists() and any(out.iterdir()):
    raise cli.user_error(FileExistsError(
        f'{out} exists and is not empty; choose a new --out (nothing was written).'))
  out.mkdir(parents=True, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(checkpointing.absolute_path(out / 'variables'),
             jax.tree_util.tree_map(np.asarray, variables))
  ckptr.wait_until_finished()
  (out / 'net.json').write_text(json.dumps({'net': net, 'kwargs': net_kwargs}, indent=2))
  return str(out)


# The generator a training run's workdir provides, by the run's mode: the autoencoder's
# decoder (retrofit) or the synthesis run's generator (refinement).
RUN_GENERATORS = {'autoencoder': 'dec', 'synthesis': 'gen'}


def load_pretrained(path: str, module, name: str) -> Dict:
  """Variables (host numpy) for `module` (net `name`) from any of the three sources.

  Raises a user error when `path` holds none of them, or weights that do not fit.
  """
  p = epath.Path(path)
  expected = jax.eval_shape(lambda: models.init_variables(module, jax.random.PRNGKey(0)))
  if (p / 'net.json').exists():
    meta = json.loads((p / 'net.json').read_text())
    if meta['net'] != name:
      raise cli.user_error(ValueError(
          f'{path} holds a {meta["net"]} ({meta["kwargs"]}), but the config asks for a '
          f'{name}.'))
    v = ocp.StandardCheckpointer().restore(checkpointing.absolute_path(p / 'variables'))
    what = f'Pretrained weights {path}'
  elif epath.Path(str(path) + '.index').exists():
    with cli.user_errors(ValueError, FileNotFoundError):
      _, v = convert.from_tf_checkpoint(str(path), name, **models.net_kwargs(module))
    what = f'TF checkpoint {path}'
  elif (p / 'config.json').exists() and (p / 'checkpoints').exists():
    saved = json.loads((p / 'config.json').read_text())
    net = RUN_GENERATORS.get(saved.get('mode'))
    if net is None:
      raise cli.user_error(ValueError(
          f'{path} is a {saved.get("mode")} run; only an autoencoder run (its decoder) '
          'or a synthesis run (its generator) provides a generator.'))
    raw = checkpointing.restore_raw(p)
    v = {'params': raw['params'][net]}
    if raw['batch_stats'].get(net):
      v['batch_stats'] = raw['batch_stats'][net]
    what = f'{saved["mode"].capitalize()} run {path} ({net}, raw weights)'
  else:
    raise cli.user_error(FileNotFoundError(
        f'No pretrained weights at {path!r}. Give a directory written by '
        '`python -m hat_ebm_jax.pretrained`, a TF checkpoint prefix (.../ckpt with '
        'ckpt.index beside it), or the workdir of an autoencoder or synthesis run.'))
  with cli.user_errors(ValueError):
    convert.check_tree_matches(expected, v, what)
  return jax.tree_util.tree_map(np.asarray, flax.core.unfreeze(v))


def main(argv):
  """Converts `--tf_checkpoint` (net `--net`) to a pretrained-weights directory `--out`."""
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  kwargs = {k: getattr(f, k) for k in ('ngf', 'nz', 'nch') if getattr(f, k) is not None}
  if f.out_factor is not None:
    kwargs['out_factor'] = f.out_factor
  with cli.user_errors(ValueError, FileNotFoundError):  # unreadable or another net
    module, variables = convert.from_tf_checkpoint(f.tf_checkpoint, f.net, **kwargs)
  path = save_pretrained(f.out, f.net, models.net_kwargs(module), variables)
  n = sum(np.size(v) for v in jax.tree_util.tree_leaves(variables.get('params', {})))
  print(f'Wrote {f.net} ({n:,} trainable parameters) to {path}')


def run_cli() -> None:
  """Defines the command's flags and runs `main` (`cli.run`: user errors in one line)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('tf_checkpoint', None, 'TF checkpoint prefix (.../ckpt).')
  flags.DEFINE_enum('net', None, list(models.NAMES), 'Net the checkpoint holds.')
  flags.DEFINE_integer('ngf', None, 'Width (read off the checkpoint if omitted).')
  flags.DEFINE_integer('nz', None, 'Latent size of a generator.')
  flags.DEFINE_integer('nch', None, 'Image channels.')
  flags.DEFINE_float('out_factor', None, 'Generator output factor (gen_factor).')
  flags.DEFINE_string('out', None, 'Output directory (must not exist or be empty).')
  flags.mark_flags_as_required(['tf_checkpoint', 'net', 'out'])
  cli.run(main)


if __name__ == '__main__':
  run_cli()
