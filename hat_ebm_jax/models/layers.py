"""Layers shared by every network, with the Keras defaults of the original (docs/algorithm.md §2).

Conv and dense kernels are `glorot_uniform`, biases zero, convs `SAME` (1x1 shortcuts
`VALID`), batch norm `epsilon=1e-3` and always in inference mode (moving statistics live in
the `batch_stats` collection and never change; `scale`/`bias` are trained).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

KERNEL_INIT = nn.initializers.glorot_uniform()
BN_EPSILON = 1e-3


CONV_ALGORITHMS = ('direct', 'winograd', 'winograd_large')


def conv(features: int, kernel: int, name: str, dtype: Any = jnp.float32,
         algorithm: str = 'direct') -> nn.Module:
  """A Keras-initialised conv: 3x3 `SAME` or 1x1 `VALID`.

  `algorithm` (3x3 only; see `Conv3x3`): 'direct', 'winograd' or 'winograd_large'. The
  parameters (`kernel` [k, k, in, out], `bias` [out]) are the same for every algorithm.
  """
  if algorithm not in CONV_ALGORITHMS:
    raise ValueError(f'conv algorithm must be one of {CONV_ALGORITHMS}; got {algorithm!r}.')
  if kernel == 3 and algorithm != 'direct':
    return Conv3x3(features, dtype, algorithm, name=name)
  return nn.Conv(
      features, (kernel, kernel),
      padding='SAME' if kernel > 1 else 'VALID',
      kernel_init=KERNEL_INIT, bias_init=nn.initializers.zeros,
      dtype=dtype, param_dtype=jnp.float32, name=name)


def pooled_kernel(kernel: jax.Array) -> jax.Array:
  """The 4x4 kernel `K` with `conv_s2(x, K) = avg_pool2(conv_same(x, kernel))`.

  `K[e] = (1/4) sum_{a, b in {0, 1}} kernel[e - (a, b)]` (zero outside 3x3): the 3x3
  kernel convolved with the 2x2 box. [3, 3, in, out] -> [4, 4, in, out].
  """
  k = sum(jnp.pad(kernel, ((a, 1 - a), (b, 1 - b), (0, 0), (0, 0)))
          for a in (0, 1) for b in (0, 1))
  return 0.25 * k


class PooledConv(nn.Module):
  """A 3x3 `SAME` conv followed by 2x2 average pooling, computed as one 4x4 conv with
  stride 2 (padding 1). Same parameters as `conv(features, 3, name)` (`kernel`
  `[3, 3, in, out]`, `bias`) and, up to float rounding, the same output, with 4/9 of the
  multiply-adds. [B, H, W, in] -> [B, H/2, W/2, out].
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', KERNEL_INIT, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, k4, bias = promote_dtype(x, pooled_kernel(kernel), bias, dtype=self.dtype)
    return conv4x4_stride2(x, k4) + bias


_NHWC = ('NHWC', 'HWIO', 'NHWC')


# --- Winograd F(4x4, 3x3) ----------------------------------------------------------------
# Lavin & Gray (2016), interpolation points 0, 1, -1, 2, -2, inf: a 6x6 input tile `d` gives
# the 4x4 output tile `A^T [(G g G^T) * (B^T d B)] A` of a 3x3 correlation with kernel
# `g`, 36 multiplies per (in, out) channel pair instead of 144. These are the matrices of
# oneDNN's and cuDNN's F(4x4, 3x3) kernels.
_WINO_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                     [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                    np.float32)
_WINO_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
                   np.float32)
_WINO_AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                     [0, 1, -1, 8, -8, 1]], np.float32)
_WINO_M = _WINO_AT.shape[0]  # output tile 4 (input tile 6)


def _tiles(x: jax.Array, axis: int, n: int) -> jax.Array:
  """Overlapping 6-row tiles at stride 4 along `axis` (length 4n + 2): tile `t` is rows
  `4t .. 4t+5`. [.., 4n+2, ..] -> [.., n, 6, ..] (by a reshape and one concat)."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, 4 * (n + 1) - x.shape[axis])
  x = jnp.pad(x, pad)
  shape = list(x.shape)
  shape[axis:axis + 1] = [n + 1, 4]
  blocks = x.reshape(shape)  # [.., n+1, 4, ..]
  head = jax.lax.slice_in_dim(blocks, 0, n, axis=axis)
  tail = jax.lax.slice_in_dim(jax.lax.slice_in_dim(blocks, 1, n + 1, axis=axis), 0, 2,
                              axis=axis + 1)
  return jnp.concatenate([head, tail], axis=axis + 1)


def _winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 `SAME` stride-1 conv by Winograd F(4x4, 3x3): [B, H, W, in] -> [B, H, W, out].

  H and W must be multiples of 4. The padded input is cut into overlapping 6x6 tiles at
  stride 4; the transforms `B^T d B`, `G g G^T` and `A^T m A` are small matrix products
  over the tile axes, and the 36 transformed products one batched matmul
  [36, B*H*W/16, in] x [36, in, out]. Few, large XLA ops: quick to compile.
  """
  b, h, w, _ = x.shape
  th, tw = h // _WINO_M, w // _WINO_M
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  d = _tiles(_tiles(xp, 1, th), 3, tw)  # [B, th, 6, tw, 6, in]
  v = jnp.einsum('ri,btiujc->rbtujc', _WINO_BT, d)
  v = jnp.einsum('sj,rbtujc->rsbtuc', _WINO_BT, v)  # [6, 6, B, th, tw, in]
  u = jnp.einsum('ri,ijco,sj->rsco', _WINO_G, kernel, _WINO_G)  # [6, 6, in, out]
  prod = jnp.einsum('rsbtuc,rsco->rsbtuo', v, u)  # [6, 6, B, th, tw, out]
  y = jnp.einsum('pr,rsbtuo->psbtuo', _WINO_AT, prod)
  y = jnp.einsum('qs,psbtuo->btpuqo', _WINO_AT, y)  # [B, th, 4, tw, 4, out]
  return y.reshape(b, h, w, -1)


def _direct_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=_NHWC)


@jax.custom_vjp
def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 `SAME` conv (NHWC, HWIO) by Winograd F(4x4, 3x3); H, W multiples of 4.

  Equal to `lax.conv_general_dilated(x, kernel, (1, 1), 'SAME')` up to float rounding
  (about 2e-5 of the output's largest value in float32) with 1/4 of the multiplies. Its
  input gradient, which Langevin sampling needs every step, is again a Winograd conv
  (with the flipped, transposed kernel); the kernel gradient is XLA's.
  """
  return _winograd_conv3x3(x, kernel)


def _winograd_fwd(x, kernel):
  return _winograd_conv3x3(x, kernel), (x, kernel)


def _winograd_bwd(res, ct):
  x, kernel = res
  dx = _winograd_conv3x3(ct, jnp.swapaxes(kernel[::-1, ::-1], 2, 3))
  _, kernel_vjp = jax.vjp(lambda k: _direct_conv3x3(x, k), kernel)
  dk, = kernel_vjp(ct)
  return dx.astype(x.dtype), dk


winograd_conv3x3.defvjp(_winograd_fwd, _winograd_bwd)


def winograd_applies(shape: Sequence[int], features: int, dtype: Any,
                     algorithm: str) -> bool:
  """Whether a 3x3 conv of input `shape` [B, H, W, in] runs by Winograd.

  'winograd': every float32 conv whose H and W are multiples of 4. 'winograd_large' (what
  `conv_algorithm='auto'` means on CPU): only where it was measured faster on CPU, maps of
  16x16 or more with 64 or more input and output channels (the paper's 256-channel
  convs at 32x32 and 16x16; slower at 8x8, where the tiles are too few).
  """
  _, h, w, c = shape
  if algorithm == 'direct' or jnp.dtype(dtype) != jnp.float32 or h % 4 or w % 4:
    return False
  if algorithm == 'winograd_large':
    return min(h, w) >= 16 and min(c, features) >= 64
  return True


class Conv3x3(nn.Module):
  """A 3x3 `SAME` conv with `nn.Conv`'s parameters (`kernel` [3, 3, in, out], `bias`)
  and initialisation, computed by Winograd F(4x4, 3x3) where `winograd_applies`, else
  directly. [B, H, W, in] -> [B, H, W, features].
  """
  features: int
  dtype: Any = jnp.float32
  algorithm: str = 'winograd'

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', KERNEL_INIT, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    if winograd_applies(x.shape, self.features, x.dtype, self.algorithm):
      y = winograd_conv3x3(x, kernel)
    else:
      y = _direct_conv3x3(x, kernel)
    return y + bias


def _conv4x4_stride2(x: jax.Array, k4: jax.Array) -> jax.Array:
  return jax.lax.conv_general_dilated(x, k4, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=_NHWC)


# Input gradient of the 4x4 stride-2 conv, one output phase at a time. Per axis,
# dx[2u] = k[1] ct[u] + k[3] ct[u-1] and dx[2u+1] = k[0] ct[u+1] + k[2] ct[u]: phase p
# is a 2-tap stride-1 conv of the cotangent with taps `_PHASE_TAPS[p][0]` and padding
# `_PHASE_TAPS[p][1]`.
_PHASE_TAPS = {0: ((3, 1), (1, 0)), 1: ((2, 0), (0, 1))}


def _conv4x4_stride2_input_grad(ct: jax.Array, k4: jax.Array) -> jax.Array:
  """d/dx of `<conv4x4_stride2(x, k4), ct>`: [B, h, w, out] -> [B, 2h, 2w, in].

  Four stride-1 2x2 convs (one per output phase), interleaved: the multiply-adds of
  the forward pass. XLA's generic transpose is an input-dilated conv that multiplies
  by the inserted zeros too (about 2x slower on CPU).
  """
  k_t = jnp.swapaxes(k4, 2, 3)  # [4, 4, out, in]
  rows = []
  for taps_h, pad_h in _PHASE_TAPS.values():
    cols = []
    for taps_w, pad_w in _PHASE_TAPS.values():
      w = k_t[jnp.array(taps_h)][:, jnp.array(taps_w)]  # [2, 2, out, in]
      cols.append(jax.lax.conv_general_dilated(ct, w, (1, 1), (pad_h, pad_w),
                                               dimension_numbers=_NHWC))
    rows.append(jnp.stack(cols, axis=3))  # [B, h, w, 2 (phase w), in]
  dx = jnp.stack(rows, axis=2)  # [B, h, 2 (phase h), w, 2 (phase w), in]
  b, h, _, w, _, c = dx.shape
  return dx.reshape(b, 2 * h, 2 * w, c)


@jax.custom_vjp
def conv4x4_stride2(x: jax.Array, k4: jax.Array) -> jax.Array:
  """4x4 conv, stride 2, padding 1 (NHWC, HWIO): [B, H, W, in] -> [B, H/2, W/2, out].

  Differentiable as `lax.conv_general_dilated`; its input gradient is computed by
  phases (`_conv4x4_stride2_input_grad`), which Langevin sampling needs every step.
  """
  return _conv4x4_stride2(x, k4)


def _conv4x4_stride2_fwd(x, k4):
  return _conv4x4_stride2(x, k4), (x, k4)


def _conv4x4_stride2_bwd(res, ct):
  x, k4 = res
  _, kernel_vjp = jax.vjp(lambda k: _conv4x4_stride2(x, k), k4)
  dk, = kernel_vjp(ct)
  return _conv4x4_stride2_input_grad(ct, k4).astype(x.dtype), dk


conv4x4_stride2.defvjp(_conv4x4_stride2_fwd, _conv4x4_stride2_bwd)


def dense(features: int, name: str, use_bias: bool = True,
          dtype: Any = jnp.float32) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, kernel_init=KERNEL_INIT,
                  bias_init=nn.initializers.zeros, dtype=dtype,
                  param_dtype=jnp.float32, name=name)


def batch_norm(name: str, dtype: Any = jnp.float32) -> nn.BatchNorm:
  """Inference-mode batch norm (Keras `training=False`): moving statistics only."""
  return nn.BatchNorm(use_running_average=True, momentum=0.99, epsilon=BN_EPSILON,
                      dtype=dtype, param_dtype=jnp.float32, name=name)


def avg_pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling with stride 2. [B, H, W, C] -> [B, H/2, W/2, C]."""
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def upsample2x(x: jax.Array) -> jax.Array:
  """Exact 2x bilinear upsampling of TF `UpSampling2D(interpolation='bilinear')`.

  Half-pixel centres with clamped edges: output pixel `2i` is `0.75 x[i] + 0.25 x[i-1]`
  and `2i+1` is `0.75 x[i] + 0.25 x[i+1]` (indices clamped), separably in H and W.
  Equal to `jax.image.resize(x, (B, 2H, 2W, C), 'bilinear')` but only shifts and adds.
  [B, H, W, C] -> [B, 2H, 2W, C].
  """

  def up_axis(v, axis):
    n = v.shape[axis]
    prev = jnp.concatenate(
        [jax.lax.slice_in_dim(v, 0, 1, axis=axis),
         jax.lax.slice_in_dim(v, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate(
        [jax.lax.slice_in_dim(v, 1, n, axis=axis),
         jax.lax.slice_in_dim(v, n - 1, n, axis=axis)], axis=axis)
    even = 0.75 * v + 0.25 * prev
    odd = 0.75 * v + 0.25 * nxt
    out = jnp.stack([even, odd], axis=axis + 1)
    shape = list(v.shape)
    shape[axis] = 2 * n
    return out.reshape(shape)

  return up_axis(up_axis(x, 1), 2)
