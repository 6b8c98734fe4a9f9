"""Converts pytorch-fid's FID Inception state dict into the Flax tree of `FIDInception`.

  python -m hat_ebm_jax.fid.convert_weights \
      --pth=pt_inception-2015-12-05-6726825d.pth --out=fid_inception.npz

Input: the torch state dict `pt_inception-2015-12-05-6726825d.pth` (from
`inception.WEIGHTS_URL`; this tool never downloads it), read with `torch.load` (torch is
imported only here and is not a dependency), or an `.npz` holding the same state dict
(same keys, numpy arrays) for machines without torch. Output: an `.npz` of flat Flax keys
(`params/Mixed_5b/branch1x1/conv/kernel`, ...) that `inception.load_fid_inception` reads.

Key mapping, per `BasicConv2d` unit `P` (e.g. `Mixed_5b.branch1x1`):
  `P.conv.weight` [O, I, kh, kw] -> `params/P/conv/kernel` [kh, kw, I, O]
  `P.bn.weight` / `P.bn.bias`    -> `params/P/bn/scale` / `params/P/bn/bias`
  `P.bn.running_mean` / `_var`   -> `batch_stats/P/bn/mean` / `batch_stats/P/bn/var`
`*.num_batches_tracked` and the 1008-way `fc.*` head are dropped (FID uses `pool_3`).
Any other key, a missing variable or a wrong shape raises ValueError listing them.
"""

import argparse
import os
import sys
from typing import Dict, Mapping

import numpy as np

from hat_ebm_jax.fid import inception

_LEAF = {
    'conv.weight': ('params', 'conv/kernel'),
    'bn.weight': ('params', 'bn/scale'),
    'bn.bias': ('params', 'bn/bias'),
    'bn.running_mean': ('batch_stats', 'bn/mean'),
    'bn.running_var': ('batch_stats', 'bn/var'),
}
_DROPPED = ('fc.weight', 'fc.bias')


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """A torch state dict from `.pth` (needs torch) or `.npz` as `{key: numpy array}`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f'No state dict at {path!r}. Get {inception.WEIGHTS_URL} (this tool never '
        'downloads it).')
  if path.endswith('.npz'):
    with np.load(path) as f:
      return {k: np.asarray(f[k]) for k in f.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'Reading a .pth needs torch (`pip install torch`), which hat_ebm_jax does not '
        'depend on. Alternatively save the state dict as .npz elsewhere: '
        'np.savez(out, **{k: v.numpy() for k, v in torch.load(pth).items()}).') from e
  state = torch.load(path, map_location='cpu')
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Torch keys -> flat Flax keys of `FIDInception`, checked against the net's shapes."""
  flat, unknown = {}, []
  for key, value in state_dict.items():
    if key.endswith('num_batches_tracked') or key in _DROPPED:
      continue
    for suffix, (collection, leaf) in _LEAF.items():
      if key.endswith('.' + suffix):
        unit = key[:-len(suffix) - 1].replace('.', '/')
        v = np.asarray(value, np.float32)
        if suffix == 'conv.weight':
          if v.ndim != 4:
            raise ValueError(f'{key}: expected an OIHW conv weight; got shape {v.shape}.')
          v = v.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        flat[f'{collection}/{unit}/{leaf}'] = v
        break
    else:
      unknown.append(key)
  if unknown:
    raise ValueError(f'{len(unknown)} keys that are not part of pytorch-fid\'s FID '
                     f'Inception: {", ".join(sorted(unknown)[:10])}')
  inception.check_shapes(flat, inception.variable_shapes())
  return flat


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--pth', required=True,
                      help='pt_inception-2015-12-05-6726825d.pth, or an .npz of that state '
                      'dict')
  parser.add_argument('--out', required=True, help='output .npz for load_fid_inception')
  args = parser.parse_args(argv)
  flat = convert_state_dict(read_state_dict(args.pth))
  out_dir = os.path.dirname(os.path.abspath(args.out))
  os.makedirs(out_dir, exist_ok=True)
  inception.save_variables(args.out, flat)
  n = sum(v.size for v in flat.values())
  print(f'wrote {len(flat)} arrays ({n:,} scalars) to {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
