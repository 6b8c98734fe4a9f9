"""Import of the authors' TF2 object-based checkpoints (Keras `save_weights`).

`from_tf_checkpoint(prefix, name, **kwargs)` returns `(module, variables)`. TF keys such as
`block2/conv_1/kernel/.ATTRIBUTES/VARIABLE_VALUE` map one to one onto the Flax tree
(`params/block2/conv_1/kernel`); batch norm `gamma`/`beta` become `scale`/`bias`, and the
moving statistics go to the `batch_stats` collection. Widths not given are read off the
checkpoint. A checkpoint that does not fit the net raises ValueError listing the first
mismatches.

The command that writes a converted checkpoint as a pretrained-weights directory is
`python -m hat_ebm_jax.pretrained` (`python -m hat_ebm_jax.convert` now only says so). This
module depends only on `models` of the package.
"""

from typing import Dict, Tuple

import flax
import flax.linen as nn
import jax
import numpy as np

from hat_ebm_jax import models

_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'
_LEAF = {'kernel': ('params', 'kernel'), 'bias': ('params', 'bias'),
         'gamma': ('params', 'scale'), 'beta': ('params', 'bias'),
         'moving_mean': ('batch_stats', 'mean'),
         'moving_variance': ('batch_stats', 'var')}


def read_tf_checkpoint(prefix: str) -> Dict[str, np.ndarray]:
  """All variables of a TF checkpoint as `{'block2/conv_1/kernel': array}`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    reader = tf.train.load_checkpoint(prefix)
  except Exception as e:  # NotFoundError, DataLossError, ...
    raise FileNotFoundError(
        f'Cannot read a TF checkpoint at prefix {prefix!r} ({type(e).__name__}). Pass the '
        'prefix, e.g. .../ckpt for the files ckpt.index and ckpt.data-00000-of-00001.'
    ) from e
  out = {}
  for key in reader.get_variable_to_shape_map():
    if key.endswith(_SUFFIX) and not key.startswith(('optimizer', 'save_counter')):
      out[key[:-len(_SUFFIX)]] = reader.get_tensor(key)
  return out


def tf_to_flax(tf_vars: Dict[str, np.ndarray]) -> Dict:
  """Maps TF variable names onto a nested Flax variables dict."""
  tree: Dict = {}
  for key, value in tf_vars.items():
    *path, leaf = key.split('/')
    if leaf not in _LEAF:
      raise ValueError(f'Unexpected TF variable {key!r} (leaf {leaf!r}).')
    collection, name = _LEAF[leaf]
    node = tree.setdefault(collection, {})
    for p in path:
      node = node.setdefault(p, {})
    node[name] = np.asarray(value, np.float32)
  return tree


def _infer_kwargs(name: str, tf_vars: Dict[str, np.ndarray]) -> Dict:
  """Reads `ngf` (and `nz`, `nch`) off the checkpoint's shapes."""
  kw = {}
  try:
    if name == 'ebm_sngan32':
      kw['ngf'] = tf_vars['conv_1/conv_1/kernel'].shape[-1]
      kw['nch'] = tf_vars['conv_1/conv_1/kernel'].shape[-2]
    elif name.startswith('ebm_sngan'):
      kw['ngf'] = tf_vars['conv_1/conv_1/kernel'].shape[-1] * 16
      kw['nch'] = tf_vars['conv_1/conv_1/kernel'].shape[-2]
    elif name.startswith('gen_sngan'):
      kw['nz'] = tf_vars['lin_1/kernel'].shape[0]
      kw['ngf'] = tf_vars['lin_1/kernel'].shape[1] // 16
    elif name in ('gen_decoder32', 'inf_encoder32'):
      kw['ngf'] = tf_vars['block1/conv_1/kernel'].shape[-1]
      if name == 'inf_encoder32':
        kw['nch'] = tf_vars['block1/conv_1/kernel'].shape[-2]
  except KeyError:
    pass  # the structural comparison below reports what is missing
  return kw


def check_tree_matches(expected, got, what: str, limit: int = 10) -> None:
  """Raises ValueError listing up to `limit` missing/unexpected/mis-shaped leaves."""
  exp = {'/'.join(k): np.shape(v) for k, v in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(expected)).items()}
  have = {'/'.join(k): np.shape(v) for k, v in flax.traverse_util.flatten_dict(
      flax.core.unfreeze(got)).items()}
  problems = []
  for k in sorted(exp):
    if k not in have:
      problems.append(f'missing {k} {exp[k]}')
    elif exp[k] != have[k]:
      problems.append(f'{k}: expected shape {exp[k]}, checkpoint has {have[k]}')
  problems += [f'unexpected {k} {have[k]}' for k in sorted(set(have) - set(exp))]
  if problems:
    shown = '\n  '.join(problems[:limit])
    more = f'\n  ... and {len(problems) - limit} more' if len(problems) > limit else ''
    raise ValueError(f'{what} does not fit the net ({len(problems)} mismatches; the '
                     f'first ones):\n  {shown}{more}\nCheck --net and its widths '
                     '(--ngf/--nz/--nch).')


def from_tf_checkpoint(ckpt_prefix: str, name: str,
                       **kwargs) -> Tuple[nn.Module, Dict]:
  """Loads an original TF checkpoint as `(module, variables)` for net `name`."""
  tf_vars = read_tf_checkpoint(ckpt_prefix)
  inferred = _infer_kwargs(name, tf_vars)
  inferred.update(kwargs)
  module = models.create(name, **inferred)
  image_size = {'ebm_sngan64': 64, 'ebm_sngan128': 128}.get(name, 32)
  expected = jax.eval_shape(
      lambda: models.init_variables(module, jax.random.PRNGKey(0), image_size))
  variables = tf_to_flax(tf_vars)
  check_tree_matches(expected, variables, f'TF checkpoint {ckpt_prefix!r}')
  return module, jax.tree_util.tree_map(np.asarray, variables)


if __name__ == '__main__':
  import sys  # pylint: disable=g-import-not-at-top
  # The import command lives in `pretrained` (which imports this module): say where.
  print('error: `python -m hat_ebm_jax.convert` is now `python -m hat_ebm_jax.pretrained` '
        '(same flags); run that instead.', file=sys.stderr)
  sys.exit(2)
