"""Layers shared by every network, with the Keras defaults of the original (docs/algorithm.md §2).

Conv and dense kernels are `glorot_uniform`, biases zero, convs `SAME` (1x1 shortcuts
`VALID`), batch norm `epsilon=1e-3` and always in inference mode (moving statistics live in
the `batch_stats` collection and never change; `scale`/`bias` are trained).
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

KERNEL_INIT = nn.initializers.glorot_uniform()
BN_EPSILON = 1e-3


CONV_ALGORITHMS = ('direct', 'winograd', 'winograd_large')


def conv(features: int, kernel: int, name: str, dtype: Any = jnp.float32,
         algorithm: str = 'direct', out_dtype: Any = None) -> nn.Module:
  """A Keras-initialised conv: 3x3 `SAME` or 1x1 `VALID`.

  `algorithm` (3x3 only; see `Conv3x3`): 'direct', 'winograd' or 'winograd_large'. The
  parameters (`kernel` [k, k, in, out], `bias` [out]) are the same for every algorithm.
  `out_dtype` (3x3 only): a wider output than `dtype` (mixed precision's image and latent
  layers: bfloat16 inputs, float32 accumulation and output); None or `dtype`: `dtype`.
  """
  if algorithm not in CONV_ALGORITHMS:
    raise ValueError(f'conv algorithm must be one of {CONV_ALGORITHMS}; got {algorithm!r}.')
  if out_dtype is not None and jnp.dtype(out_dtype) != jnp.dtype(dtype):
    if kernel != 3:
      raise ValueError(f'out_dtype is for 3x3 convs; got a {kernel}x{kernel} conv.')
    return Conv3x3(features, dtype, 'direct', out_dtype=out_dtype, name=name)
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
  """A 3x3 `SAME` conv followed by 2x2 average pooling. Same parameters as
  `conv(features, 3, name)` (`kernel` `[3, 3, in, out]`, `bias`) and, up to float
  rounding, the same output. [B, H, W, in] -> [B, H/2, W/2, out].

  Computed as one 4x4 conv with stride 2 (`pooled_kernel`: 16/36 of the multiply-adds of
  conv then pool), or, where `box_pool_applies` (large float32 maps on CPU), as a 2x2 box
  filter then a stride-2 3x3 conv by phases (`pooled_conv3x3`: 9/36). The 4x4 conv's
  input gradient is XLA's own with `algorithm='direct'` (GPU and TPU: one pass over the
  cotangent), by phases with the CPU algorithms (`conv4x4_stride2`: no multiplies by
  inserted zeros).
  """
  features: int
  dtype: Any = jnp.float32
  algorithm: str = 'direct'  # see `box_pool_applies`

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', KERNEL_INIT, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    if box_pool_applies(x.shape, self.features, self.dtype, self.algorithm):
      x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
      return pooled_conv3x3(x, kernel) + bias
    # The 4x4 kernel of the 3x3 kernel cast to `dtype`, pooled in `dtype`: the same
    # numbers for a kernel cast before the call (`models.compute_variables`), and no
    # float32 copy of it in a bfloat16 net.
    x, k4, bias = promote_dtype(x, pooled_kernel(kernel.astype(self.dtype)), bias,
                                dtype=self.dtype)
    if self.algorithm == 'direct':  # XLA's own gradient (GPU, TPU: cuDNN, XLA:TPU)
      return _conv4x4_stride2(x, k4) + bias
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


def _combine(coefs: np.ndarray, parts: Sequence[jax.Array]) -> jax.Array:
  """`sum_i coefs[i] * parts[i]`, skipping zero coefficients (a transform matrix's row)."""
  out = None
  for c, part in zip(coefs.tolist(), parts):
    if c == 0:
      continue
    term = part if c == 1 else -part if c == -1 else c * part
    out = term if out is None else out + term
  return out


def _tile_rows(x: jax.Array, axis: int, n: int) -> Sequence[jax.Array]:
  """The six row sets of the overlapping 6-row tiles at stride 4 along `axis` (length
  4n + 2): set `i` is rows `4t + i` for tiles t < n. [.., 4n+2, ..] -> 6 x [.., n, ..]
  (strided views of one reshape; the tiles themselves are never materialised)."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (0, 4 * (n + 1) - x.shape[axis])
  shape = list(x.shape)
  shape[axis:axis + 1] = [n + 1, 4]
  blocks = jnp.pad(x, pad).reshape(shape)  # [.., n+1, 4, ..]
  return [jax.lax.slice_in_dim(
      jax.lax.index_in_dim(blocks, i % 4, axis + 1, keepdims=False), i // 4, i // 4 + n,
      axis=axis) for i in range(6)]


def _winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """3x3 `SAME` stride-1 conv by Winograd F(4x4, 3x3): [B, H, W, in] -> [B, H, W, out].

  H and W must be multiples of 4. The input transform `B^T d B` of the padded input's
  overlapping 6x6 tiles (stride 4) is taken separably, rows then columns, as sums of
  strided row sets (`_tile_rows`, `_combine`: elementwise fusions, no tile copies); the
  kernel transform `G g G^T` is a small matrix product; the 36 transformed products are
  one batched matmul [36, B*H*W/16, in] x [36, in, out]; the output transform `A^T m A`
  is again sums, then one transpose back to NHWC. (Measured on CPU at [16, 32, 32, 256]:
  the transforms as sums run the conv about 1.4x faster than as matrix products over
  materialised tiles.)
  """
  b, h, w, _ = x.shape
  th, tw = h // _WINO_M, w // _WINO_M
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  rows = _tile_rows(xp, 1, th)  # 6 x [B, th, W+2, in]
  v = jnp.stack([_combine(_WINO_BT[r], rows) for r in range(6)])  # [6, B, th, W+2, in]
  cols = _tile_rows(v, 3, tw)  # 6 x [6, B, th, tw, in]
  v = jnp.stack([_combine(_WINO_BT[s], cols) for s in range(6)], axis=1)
  u = jnp.einsum('ri,ijco,sj->rsco', _WINO_G, kernel, _WINO_G)  # [6, 6, in, out]
  m = jnp.einsum('rsbtuc,rsco->rsbtuo', v, u)  # [6, 6, B, th, tw, out]
  y = jnp.stack([_combine(_WINO_AT[p], [m[r] for r in range(6)])
                 for p in range(_WINO_M)])  # [4, 6, B, th, tw, out]
  y = jnp.stack([_combine(_WINO_AT[q], [y[:, s] for s in range(6)])
                 for q in range(_WINO_M)], axis=1)  # [4, 4, B, th, tw, out]
  return y.transpose(2, 3, 0, 4, 1, 5).reshape(b, h, w, -1)


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
  return _cpu_algorithm_applies(shape, features, dtype, algorithm, multiple=4)


def _cpu_algorithm_applies(shape: Sequence[int], features: int, dtype: Any,
                           algorithm: str, multiple: int) -> bool:
  """The rule `winograd_applies`, `box_pool_applies` and `fast_grad_applies` share
  (`shape` the map the op computes at): float32 under a CPU
  algorithm, H and W multiples of `multiple`; under 'winograd_large' also 16x16 or more
  with 64 or more input and output channels."""
  _, h, w, c = shape
  if (algorithm == 'direct' or jnp.dtype(dtype) != jnp.float32
      or h % multiple or w % multiple):
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
  out_dtype: Any = None  # a wider output: direct conv accumulating in it (see `conv`)

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', KERNEL_INIT, (3, 3, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    if self.out_dtype is not None and jnp.dtype(self.out_dtype) != jnp.dtype(self.dtype):
      x, kernel = promote_dtype(x, kernel, dtype=self.dtype)
      y = jax.lax.conv_general_dilated(x, kernel, (1, 1), 'SAME', dimension_numbers=_NHWC,
                                       preferred_element_type=self.out_dtype)
      return y + bias.astype(self.out_dtype)
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


def _with_input_grad(input_grad: Callable[[jax.Array, jax.Array], jax.Array]):
  """Decorates `forward(x, kernel)` with a custom VJP: the input gradient is
  `input_grad(ct, kernel)` (cast to `x`'s dtype), the kernel gradient XLA's of `forward`.
  """
  def wrap(forward):
    fn = jax.custom_vjp(forward)

    def fwd(x, kernel):
      return forward(x, kernel), (x, kernel)

    def bwd(res, ct):
      x, kernel = res
      _, kernel_vjp = jax.vjp(lambda k: forward(x, k), kernel)
      dk, = kernel_vjp(ct)
      return input_grad(ct, kernel).astype(x.dtype), dk

    fn.defvjp(fwd, bwd)
    return fn
  return wrap


@_with_input_grad(_conv4x4_stride2_input_grad)
def conv4x4_stride2(x: jax.Array, k4: jax.Array) -> jax.Array:
  """4x4 conv, stride 2, padding 1 (NHWC, HWIO): [B, H, W, in] -> [B, H/2, W/2, out].

  Differentiable as `lax.conv_general_dilated`; its input gradient is computed by
  phases (`_conv4x4_stride2_input_grad`), which Langevin sampling needs every step.
  """
  return _conv4x4_stride2(x, k4)


# --- conv then 2x2 average pool, as a box filter then a stride-2 3x3 conv --------------
# avg_pool2(conv3x3_same(x, k))[u] = sum_t k[t] bx[2u + t], with `bx` the 2x2 mean of the
# zero-padded `x` ([B, H+1, W+1, C]): the pooling moves before the conv, which then runs
# at stride 2 (9 taps per output instead of the pooled kernel's 16). Per axis the stride-2
# conv splits by the parity of `bx`'s rows: out[u] = k0 bx[2u] + k2 bx[2u+2] + k1 bx[2u+1],
# so it is four stride-1 convs on `bx`'s phases (taps 2x2, 2x1, 1x2, 1x1), whose sum
# XLA:CPU runs about 2x faster than one 4x4 stride-2 conv (or a strided 3x3 one).
_BOX_PHASES = ((0, (0, 2)), (1, (1,)))  # (phase, taps of that phase), per axis


def box_filter2(x: jax.Array) -> jax.Array:
  """2x2 mean of `x` zero-padded by 1: [B, H, W, C] -> [B, H+1, W+1, C]."""
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return 0.25 * (xp[:, :-1, :-1] + xp[:, 1:, :-1] + xp[:, :-1, 1:] + xp[:, 1:, 1:])


def _pooled_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  bx = box_filter2(x)
  b, hp, wp, c = bx.shape
  h, w = (hp - 1) // 2, (wp - 1) // 2
  phases = jnp.pad(bx, ((0, 0), (0, 1), (0, 1), (0, 0))).reshape(b, h + 1, 2, w + 1, 2, c)
  out = None
  for ph, taps_h in _BOX_PHASES:
    for pw, taps_w in _BOX_PHASES:
      xs = phases[:, :h + len(taps_h) - 1, ph, :w + len(taps_w) - 1, pw]
      k = kernel[jnp.array(taps_h)][:, jnp.array(taps_w)]
      part = jax.lax.conv_general_dilated(xs, k, (1, 1), 'VALID', dimension_numbers=_NHWC)
      out = part if out is None else out + part
  return out


def _pooled_conv3x3_input_grad(ct: jax.Array, kernel: jax.Array) -> jax.Array:
  """d/dx of `<pooled_conv3x3(x, kernel), ct>`: [B, h, w, out] -> [B, 2h, 2w, in].

  Per axis `d bx[2v] = k0 ct[v] + k2 ct[v-1]` (a 2-tap conv of `ct` padded by 1) and
  `d bx[2v+1] = k1 ct[v]` (1 tap): four stride-1 convs, interleaved, then the box
  filter's transpose (again a 2x2 mean): the multiply-adds of the forward pass.
  """
  b, h, w, _ = ct.shape
  k_t = jnp.swapaxes(kernel, 2, 3)  # [3, 3, out, in]
  rows = []
  for _, taps_h in _BOX_PHASES:
    cols = []
    for _, taps_w in _BOX_PHASES:
      k = k_t[jnp.array(taps_h[::-1])][:, jnp.array(taps_w[::-1])]
      pad = [(len(t) - 1, len(t) - 1) for t in (taps_h, taps_w)]
      part = jax.lax.conv_general_dilated(ct, k, (1, 1), pad, dimension_numbers=_NHWC)
      cols.append(jnp.pad(part, ((0, 0), (0, h + 1 - part.shape[1]),
                                 (0, w + 1 - part.shape[2]), (0, 0))))
    rows.append(jnp.stack(cols, axis=3))  # [B, h+1, w+1, 2 (phase w), in]
  d_bx = jnp.stack(rows, axis=2).reshape(b, 2 * h + 2, 2 * w + 2, -1)
  d_bx = d_bx[:, :2 * h + 1, :2 * w + 1]
  return 0.25 * (d_bx[:, :-1, :-1] + d_bx[:, 1:, :-1] + d_bx[:, :-1, 1:] + d_bx[:, 1:, 1:])


@_with_input_grad(_pooled_conv3x3_input_grad)
def pooled_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`avg_pool2(conv3x3_same(x, kernel))` (NHWC, HWIO) without the bias, H and W even:
  [B, H, W, in] -> [B, H/2, W/2, out], by a box filter and a stride-2 conv by phases.

  Equal to the 4x4 stride-2 conv with `pooled_kernel(kernel)` up to float rounding (about
  1e-6 of the output's largest value in float32) with 9/16 of its multiply-adds; its
  input gradient, which Langevin sampling needs every step, has the same count
  (`_pooled_conv3x3_input_grad`); the kernel gradient is XLA's, of the four phase convs.
  """
  return _pooled_conv3x3(x, kernel)


def box_pool_applies(shape: Sequence[int], features: int, dtype: Any,
                     algorithm: str) -> bool:
  """Whether a `PooledConv` of input `shape` [B, H, W, in] runs as `pooled_conv3x3`.

  The CPU algorithms only (`conv_algorithm='auto'` on CPU is 'winograd_large'): float32
  with even H and W; under 'winograd_large' also maps of 16x16 or more with 64 or more
  input and output channels, the sizes where `winograd_applies` (measured faster there:
  the paper EBMs' stem and `block2`). 'direct' (GPU, TPU) keeps the 4x4 stride-2 conv.
  """
  return _cpu_algorithm_applies(shape, features, dtype, algorithm, multiple=2)


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
  """2x2 average pooling with stride 2. [B, H, W, C] -> [B, H/2, W/2, C].

  Float32 as `mean`; a narrower dtype is summed in its own dtype (`jnp.mean` would
  write a float32 copy of `x` first, which XLA:TPU keeps in memory).
  """
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  if x.dtype == jnp.float32:
    return x.mean(axis=(2, 4))
  return jax.lax.reduce(x, np.array(0, x.dtype), jax.lax.add, (2, 4)) * np.array(
      0.25, x.dtype)


def _up_axis(v: jax.Array, axis: int) -> jax.Array:
  """Bilinear 2x along `axis`: out[2i] = .75 v[i] + .25 v[i-1], out[2i+1] = .75 v[i]
  + .25 v[i+1], indices clamped. [.., n, ..] -> [.., 2n, ..]."""
  n = v.shape[axis]
  prev = jnp.concatenate([_sl(v, 0, 1, axis), _sl(v, 0, n - 1, axis)], axis=axis)
  nxt = jnp.concatenate([_sl(v, 1, n, axis), _sl(v, n - 1, n, axis)], axis=axis)
  out = jnp.stack([0.75 * v + 0.25 * prev, 0.75 * v + 0.25 * nxt], axis=axis + 1)
  shape = list(v.shape)
  shape[axis] = 2 * n
  return out.reshape(shape)


def _up_axis_transpose(g: jax.Array, axis: int) -> jax.Array:
  """The transpose of `_up_axis`: [.., 2n, ..] -> [.., n, ..]. With `e = g[2i]`,
  `o = g[2i+1]`: dv[i] = .75 (e[i] + o[i]) + .25 (e[i+1] + o[i-1]), and the clamped
  edges add .25 e[0] to dv[0] and .25 o[n-1] to dv[n-1]. One fusion, where autodiff's
  transpose of the concatenates is several pad-and-add passes (about 5x slower on CPU).
  """
  n = g.shape[axis] // 2
  pairs = g.reshape(g.shape[:axis] + (n, 2) + g.shape[axis + 1:])
  e, o = jnp.take(pairs, 0, axis=axis + 1), jnp.take(pairs, 1, axis=axis + 1)
  if n == 1:
    return e + o
  zero = jnp.zeros_like(_sl(e, 0, 1, axis))
  from_e = jnp.concatenate([_sl(e, 0, 1, axis) + _sl(e, 1, 2, axis), _sl(e, 2, n, axis),
                            zero], axis=axis)
  from_o = jnp.concatenate([zero, _sl(o, 0, n - 2, axis),
                            _sl(o, n - 2, n - 1, axis) + _sl(o, n - 1, n, axis)], axis=axis)
  return 0.75 * (e + o) + 0.25 * (from_e + from_o)


def _sl(v: jax.Array, start: int, stop: int, axis: int) -> jax.Array:
  return jax.lax.slice_in_dim(v, start, stop, axis=axis)


def upsample2x(x: jax.Array) -> jax.Array:
  """Exact 2x bilinear upsampling of TF `UpSampling2D(interpolation='bilinear')`.

  Half-pixel centres with clamped edges: output pixel `2i` is `0.75 x[i] + 0.25 x[i-1]`
  and `2i+1` is `0.75 x[i] + 0.25 x[i+1]` (indices clamped), separably in H and W.
  Equal to `jax.image.resize(x, (B, 2H, 2W, C), 'bilinear')` but only shifts and adds;
  differentiated by autodiff (`upsample2x_fast_grad` is the same map with a hand-written
  gradient). [B, H, W, C] -> [B, 2H, 2W, C].
  """
  return _up_axis(_up_axis(x, 1), 2)


@jax.custom_vjp
def upsample2x_fast_grad(x: jax.Array) -> jax.Array:
  """`upsample2x` whose gradient is the hand-written transpose (`_up_axis_transpose`):
  about 5x faster on CPU than autodiff's on the paper generators' 16x16 and 32x32 maps,
  equal up to float rounding (the sums run in another order)."""
  return upsample2x(x)


def _upsample2x_fwd(x):
  return upsample2x(x), None


def _upsample2x_bwd(_, g):
  return (_up_axis_transpose(_up_axis_transpose(g, 2), 1),)


upsample2x_fast_grad.defvjp(_upsample2x_fwd, _upsample2x_bwd)


def upsample(x: jax.Array, algorithm: str) -> jax.Array:
  """`upsample2x`, with the hand-written gradient where the CPU algorithms run
  (`fast_grad_applies`). [B, H, W, C] -> [B, 2H, 2W, C]."""
  if fast_grad_applies(x.shape, x.dtype, algorithm):
    return upsample2x_fast_grad(x)
  return upsample2x(x)


def fast_grad_applies(shape: Sequence[int], dtype: Any, algorithm: str) -> bool:
  """Whether `upsample` of input `shape` [B, H, W, C] uses the hand-written gradient:
  under the CPU algorithms, in float32; under 'winograd_large' (CPU 'auto') only where
  the upsampled map is 16x16 or more with 64 or more channels, the maps whose convs run
  by Winograd (so the digits nets keep autodiff's, and their numbers)."""
  b, h, w, c = shape
  return _cpu_algorithm_applies((b, 2 * h, 2 * w, c), c, dtype, algorithm, multiple=1)
