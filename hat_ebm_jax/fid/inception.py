"""The Inception-v3 of FID (the TF graph `inception-2015-12-05`, `pool_3`) in Flax Linen.

Architecture: pytorch-fid's `fid_inception_v3` exactly, i.e. torchvision's Inception-v3
without `AuxLogits` whose `Mixed_5b..5d` (`FIDInceptionA`), `Mixed_6b..6e`
(`FIDInceptionC`) and `Mixed_7b` (`FIDInceptionE_1`) average-pool their pool branch with
`count_include_pad=False`, and whose `Mixed_7c` (`FIDInceptionE_2`) max-pools it; these are
the changes that reproduce the TF graph. Every conv is a `BasicConv2d` unit: conv without
bias, batch norm (`eps=1e-3`, always inference mode), ReLU. Flax names follow the torch
state dict one to one: `Mixed_5b.branch1x1.conv.weight` is `params/Mixed_5b/branch1x1/conv/
kernel` (OIHW -> HWIO), `...bn.weight/bias` are `params/.../bn/scale|bias`, and
`...bn.running_mean/var` are `batch_stats/.../bn/mean|var`. The 1008-way `fc` head is not
part of the module (FID uses `pool_3`).

`FIDInception()(images)`: images `[B, H, W, 3]` in `[-1, 1]` -> `pool_3` features
`[B, 2048]`. Inputs are resized to 299x299 inside with bilinear interpolation and half-pixel
centres (`torch.nn.functional.interpolate(..., align_corners=False)`, no antialiasing),
as pytorch-fid does. The original TF code fed `[0, 255]` images to the graph, whose own
`ResizeBilinear` is TF's legacy op (no half-pixel offset); like pytorch-fid, this port
differs from it there, which moves FID values slightly (pytorch-fid documents the gap).

Weights (never downloaded by this package): pytorch-fid's conversion of the TF graph,

  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

Convert it once with

  python -m hat_ebm_jax.fid.convert_weights --pth=pt_inception-2015-12-05-6726825d.pth \
      --out=fid_inception.npz

and load it with `load_fid_inception('fid_inception.npz') -> (module, variables)`.
"""

import os
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

WEIGHTS_URL = ('https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/'
               'pt_inception-2015-12-05-6726825d.pth')
INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPSILON = 1e-3

Pair = Union[int, Tuple[int, int]]


def _pair(v: Pair) -> Tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


class BasicConv2d(nn.Module):
  """torchvision's `BasicConv2d`: conv (no bias) -> BN(eps=1e-3, inference) -> ReLU."""
  features: int
  kernel: Pair
  stride: Pair = 1
  padding: Pair = 0

  @nn.compact
  def __call__(self, x):
    ph, pw = _pair(self.padding)
    x = nn.Conv(self.features, _pair(self.kernel), strides=_pair(self.stride),
                padding=((ph, ph), (pw, pw)), use_bias=False, name='conv')(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name='bn')(x)
    return nn.relu(x)


def _avg_pool_3x3_same(x):
  """`avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)`."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)),
                     count_include_pad=False)


def _max_pool_3x3_same(x):
  """`max_pool2d(x, 3, stride=1, padding=1)` (padding never wins: it is -inf)."""
  return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))


def _max_pool_3x3_stride2(x):
  """`max_pool2d(x, kernel_size=3, stride=2)` (no padding)."""
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')


class FIDInceptionA(nn.Module):
  """`Mixed_5b/5c/5d`: 1x1, 5x5, double 3x3 and avg-pool branches."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(64, 1, name='branch1x1')(x)
    b5 = BasicConv2d(48, 1, name='branch5x5_1')(x)
    b5 = BasicConv2d(64, 5, padding=2, name='branch5x5_2')(b5)
    b3 = BasicConv2d(64, 1, name='branch3x3dbl_1')(x)
    b3 = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_2')(b3)
    b3 = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_3')(b3)
    bp = BasicConv2d(self.pool_features, 1, name='branch_pool')(_avg_pool_3x3_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """`Mixed_6a` (grid reduction 35 -> 17)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(384, 3, stride=2, name='branch3x3')(x)
    bd = BasicConv2d(64, 1, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(96, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = BasicConv2d(96, 3, stride=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionC(nn.Module):
  """`Mixed_6b..6e`: factorised 7x7 branches."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv2d(192, 1, name='branch1x1')(x)
    b7 = BasicConv2d(c7, 1, name='branch7x7_1')(x)
    b7 = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv2d(c7, 1, name='branch7x7dbl_1')(x)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv2d(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv2d(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv2d(192, 1, name='branch_pool')(_avg_pool_3x3_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """`Mixed_7a` (grid reduction 17 -> 8)."""

  @nn.compact
  def __call__(self, x):
    b3 = BasicConv2d(192, 1, name='branch3x3_1')(x)
    b3 = BasicConv2d(320, 3, stride=2, name='branch3x3_2')(b3)
    b7 = BasicConv2d(192, 1, name='branch7x7x3_1')(x)
    b7 = BasicConv2d(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv2d(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv2d(192, 3, stride=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_3x3_stride2(x)], axis=-1)


class FIDInceptionE(nn.Module):
  """`Mixed_7b` (`pool='avg'`, FIDInceptionE_1) and `Mixed_7c` (`pool='max'`, E_2)."""
  pool: str  # 'avg' (count_include_pad=False) | 'max'

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv2d(320, 1, name='branch1x1')(x)
    b3 = BasicConv2d(384, 1, name='branch3x3_1')(x)
    b3 = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
    bd = BasicConv2d(448, 1, name='branch3x3dbl_1')(x)
    bd = BasicConv2d(384, 3, padding=1, name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([
        BasicConv2d(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
        BasicConv2d(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
    if self.pool == 'avg':
      p = _avg_pool_3x3_same(x)
    elif self.pool == 'max':
      p = _max_pool_3x3_same(x)
    else:
      raise ValueError(f'pool must be avg or max; got {self.pool!r}.')
    bp = BasicConv2d(192, 1, name='branch_pool')(p)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


def resize_bilinear(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """`F.interpolate(x, (size, size), mode='bilinear', align_corners=False)` in NHWC."""
  b, h, w, c = images.shape
  if (h, w) == (size, size):
    return images
  return jax.image.resize(images, (b, size, size, c), method='bilinear', antialias=False)


class FIDInception(nn.Module):
  """pytorch-fid's `fid_inception_v3` up to `pool_3`. [B, H, W, 3] in [-1, 1] -> [B, 2048]."""

  @nn.compact
  def __call__(self, images):
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f'FIDInception takes [B, H, W, 3] images; got {images.shape}.')
    x = resize_bilinear(images.astype(jnp.float32))
    # block 0: 299 -> 147 -> 73
    x = BasicConv2d(32, 3, stride=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv2d(32, 3, name='Conv2d_2a_3x3')(x)
    x = BasicConv2d(64, 3, padding=1, name='Conv2d_2b_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    # block 1: 73 -> 35
    x = BasicConv2d(80, 1, name='Conv2d_3b_1x1')(x)
    x = BasicConv2d(192, 3, name='Conv2d_4a_3x3')(x)
    x = _max_pool_3x3_stride2(x)
    # block 2: 35 -> 17
    x = FIDInceptionA(32, name='Mixed_5b')(x)
    x = FIDInceptionA(64, name='Mixed_5c')(x)
    x = FIDInceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = FIDInceptionC(128, name='Mixed_6b')(x)
    x = FIDInceptionC(160, name='Mixed_6c')(x)
    x = FIDInceptionC(160, name='Mixed_6d')(x)
    x = FIDInceptionC(192, name='Mixed_6e')(x)
    # block 3: 17 -> 8 -> pool_3
    x = InceptionD(name='Mixed_7a')(x)
    x = FIDInceptionE('avg', name='Mixed_7b')(x)
    x = FIDInceptionE('max', name='Mixed_7c')(x)
    return jnp.mean(x, axis=(1, 2))


# ------------------------------------------------------------------ weights


def variable_shapes(module: nn.Module = None) -> Dict[str, Tuple[int, ...]]:
  """`{'params/Mixed_5b/branch1x1/conv/kernel': shape, ...}` of the module (no compute)."""
  module = module or FIDInception()
  abstract = jax.eval_shape(
      module.init, jax.random.PRNGKey(0),
      jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  return {'/'.join(k): tuple(v.shape)
          for k, v in flax.traverse_util.flatten_dict(
              flax.core.unfreeze(abstract)).items()}


def count_parameters(variables: Mapping[str, Any]) -> int:
  """Number of scalars in a variables tree (all collections)."""
  return int(sum(np.prod(np.shape(v)) for v in jax.tree_util.tree_leaves(variables)))


def save_variables(path: str, flat: Mapping[str, np.ndarray]) -> None:
  """Writes flat `{'params/.../kernel': array}` to `path` (.npz), atomically."""
  tmp = path + '.tmp.npz'
  np.savez(tmp, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
  os.replace(tmp, path)


def _missing_message(path: str) -> str:
  return (
      f'FID Inception weights not found at {path!r}. This package never downloads them. '
      f'Get pytorch-fid\'s converted TF graph {WEIGHTS_URL} and convert it once with '
      '`python -m hat_ebm_jax.fid.convert_weights --pth=pt_inception-2015-12-05-6726825d.pth '
      '--out=fid_inception.npz`, then pass the .npz path.')


def check_shapes(flat: Mapping[str, Sequence[int]],
                 expected: Mapping[str, Tuple[int, ...]]) -> None:
  """Raises ValueError listing missing, unexpected and mis-shaped variables."""
  missing = sorted(set(expected) - set(flat))
  unexpected = sorted(set(flat) - set(expected))
  wrong = sorted(f'{k}: file {tuple(np.shape(flat[k]))} != net {expected[k]}'
                 for k in set(expected) & set(flat)
                 if tuple(np.shape(flat[k])) != tuple(expected[k]))
  if missing or unexpected or wrong:
    lines = []
    for title, items in (('missing', missing), ('unexpected', unexpected),
                         ('shape mismatch', wrong)):
      if items:
        lines.append(f'{len(items)} {title}: ' + ', '.join(items[:10])
                     + (' ...' if len(items) > 10 else ''))
    raise ValueError('FID Inception weights do not fit the network; ' + '; '.join(lines))


def load_fid_inception(weights_path: str) -> Tuple[FIDInception, Dict[str, Any]]:
  """`(module, variables)` from an .npz written by `convert_weights`.

  Raises FileNotFoundError (with where to get and how to convert the weights) when the
  file is missing, and ValueError listing the mismatches when it does not fit the net.
  """
  if not weights_path or not epath.Path(weights_path).is_file():  # local or gs://
    raise FileNotFoundError(_missing_message(weights_path))
  with epath.Path(weights_path).open('rb') as fh, np.load(fh) as f:
    flat = {k: np.asarray(f[k], np.float32) for k in f.files}
  module = FIDInception()
  check_shapes(flat, variable_shapes(module))
  variables = flax.traverse_util.unflatten_dict(
      {tuple(k.split('/')): jnp.asarray(v) for k, v in flat.items()})
  return module, variables
