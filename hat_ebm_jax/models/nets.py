"""The networks (docs/algorithm.md §2): hat EBMs `H(x)`, SN-GAN generators, AE decoder/encoder.

Module and parameter names follow the original Keras layer names (`conv_1`, `block2`,
`lin_5`, `bn_1`, `sc`, ...) so a TF checkpoint maps onto the Flax tree key by key.
All networks are NHWC; images are `[B, H, W, nch]` in `[-1, 1]`.
"""

from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from hat_ebm_jax.models import layers


def _check_images(x: jax.Array, nch: int, multiple: int, net: str) -> None:
  if x.ndim != 4 or x.shape[-1] != nch or x.shape[1] != x.shape[2] or (
      x.shape[1] % multiple):
    raise ValueError(
        f'{net}: expected images of shape [B, S, S, {nch}] (NHWC) with S a multiple of '
        f'{multiple}; got shape {tuple(x.shape)}.')


class EBMBlock(nn.Module):
  """EBM residual block `(in, out, down)`; `stem=True` is the first block of the net.

  Block: `h = conv3(relu(conv3(relu(x))))`, pool if `down`; shortcut `x` through a 1x1
  conv if `in != out or down`, then pool. The stem drops the first relu and pools the
  shortcut before its 1x1 conv. [B, H, W, in] -> [B, H/(2 if down), W/.., out].
  """
  features: int
  down: bool = False
  stem: bool = False
  dtype: Any = jnp.float32
  conv_algorithm: str = 'direct'  # 3x3 convs: see `layers.conv`

  @nn.compact
  def __call__(self, x):
    alg = self.conv_algorithm
    h = x if self.stem else nn.relu(x)
    h = layers.conv(self.features, 3, 'conv_1', self.dtype, alg)(h)
    if self.down:  # conv3 then pool, as one 4x4 stride-2 conv (4/9 of the work)
      h = layers.PooledConv(self.features, self.dtype, alg, name='conv_2')(nn.relu(h))
    else:
      h = layers.conv(self.features, 3, 'conv_2', self.dtype, alg)(nn.relu(h))
    sc = x
    needs_sc = x.shape[-1] != self.features or self.down
    # Pooling commutes with a 1x1 conv, so pool first (the original pools after the
    # 1x1 conv except in the stem; the result is the same up to rounding).
    if self.down:
      sc = layers.avg_pool2(sc)
    if needs_sc:
      sc = layers.conv(self.features, 1, 'sc', self.dtype)(sc)
    return h + sc.astype(h.dtype)


class GenBlock(nn.Module):
  """Generator residual block `(in, out, up)`; `stem=True` has no `bn_1` and no first relu.

  `h = BN1 -> relu -> up -> conv3 -> BN2 -> relu -> conv3`; shortcut: up, then a 1x1 conv
  if `in != out or up`. [B, H, W, in] -> [B, H*(2 if up), W*.., out].
  """
  features: int
  up: bool = False
  stem: bool = False
  dtype: Any = jnp.float32
  conv_algorithm: str = 'direct'  # 3x3 convs: see `layers.conv`

  @nn.compact
  def __call__(self, x):
    alg = self.conv_algorithm
    h = x
    if not self.stem:
      h = nn.relu(layers.batch_norm('bn_1', self.dtype)(h))
    if self.up:
      h = layers.upsample(h, alg)
    h = layers.conv(self.features, 3, 'conv_1', self.dtype, alg)(h)
    h = nn.relu(layers.batch_norm('bn_2', self.dtype)(h))
    h = layers.conv(self.features, 3, 'conv_2', self.dtype, alg)(h)
    # The bilinear upsample is linear with weights summing to 1, so it commutes with a
    # 1x1 conv (bias included): run the 1x1 conv at the low resolution (1/4 of the work).
    sc = x
    if x.shape[-1] != self.features or self.up:
      sc = layers.conv(self.features, 1, 'sc', self.dtype)(sc)
    if self.up:
      sc = layers.upsample(sc, alg)
    return h + sc.astype(h.dtype)


class EBM(nn.Module):
  """Hat network `H(x)`: image `[B, S, S, nch]` -> energy `[B, 1]`.

  `widths[0]` is the stem (always down); `downs[i]` says whether block `i+2` pools.
  The final dense is named `lin_{n}` with `n` one past the last block's index.
  """
  widths: Sequence[int]
  downs: Sequence[bool]
  nch: int = 3
  dtype: Any = jnp.float32
  net_name: str = 'ebm'
  conv_algorithm: str = 'direct'  # 3x3 convs: see `layers.conv`

  @nn.compact
  def __call__(self, x):
    n_down = 1 + sum(self.downs)
    _check_images(x, self.nch, 2 ** n_down, self.net_name)
    # Mixed precision (`dtype` bfloat16): every conv computes in `dtype` (the stem casts
    # the float32 image as it reads it, as a TPU's float32 conv does at its default
    # precision); the final average and dense, on [B, C], and the energy are float32.
    h = EBMBlock(self.widths[0], down=True, stem=True, dtype=self.dtype,
                 conv_algorithm=self.conv_algorithm, name='conv_1')(x.astype(jnp.float32))
    for i, (w, d) in enumerate(zip(self.widths[1:], self.downs)):
      h = EBMBlock(w, down=d, dtype=self.dtype, conv_algorithm=self.conv_algorithm,
                   name=f'block{i + 2}')(h)
    h = jnp.mean(nn.relu(h).astype(jnp.float32), axis=(1, 2))
    out = layers.dense(1, f'lin_{len(self.widths) + 1}', use_bias=False,
                       dtype=jnp.float32)(h)
    return out.astype(jnp.float32)


class Generator(nn.Module):
  """SN-GAN generator `G(z)`: `[B, nz]` -> images `[B, bottom*2^n, .., nch]`.

  Dense to `bottom*bottom*ngf`, reshaped channels-first `[B, ngf, b, b]` then transposed
  to NHWC (as the original), up-blocks `widths`, BN, relu, conv3, `out_factor * tanh`.
  """
  ngf: int
  widths: Sequence[int]
  nz: int = 128
  bottom: int = 4
  nch: int = 3
  out_factor: float = 1.0
  dtype: Any = jnp.float32
  net_name: str = 'gen'
  conv_algorithm: str = 'direct'  # 3x3 convs: see `layers.conv`

  @nn.compact
  def __call__(self, z):
    if z.ndim != 2 or z.shape[1] != self.nz:
      raise ValueError(f'{self.net_name}: expected latents of shape [B, {self.nz}] '
                       f'(nz={self.nz}); got shape {tuple(z.shape)}.')
    # Mixed precision (`dtype` bfloat16): the dense layer reading `z` ([B, b*b*ngf]) is
    # float32; the blocks and the last BN compute in `dtype`; the last conv reads
    # `dtype` and accumulates and returns float32 (its 3 channels are the image).
    h = layers.dense(self.bottom * self.bottom * self.ngf, 'lin_1',
                     dtype=jnp.float32)(z.astype(jnp.float32))
    h = h.reshape(z.shape[0], self.ngf, self.bottom, self.bottom).transpose(0, 2, 3, 1)
    for i, w in enumerate(self.widths):
      h = GenBlock(w, up=True, dtype=self.dtype, conv_algorithm=self.conv_algorithm,
                   name=f'block{i + 2}')(h)
    n = len(self.widths) + 2
    h = nn.relu(layers.batch_norm(f'bn_{n}', self.dtype)(h))
    h = layers.conv(self.nch, 3, f'conv_{n}', self.dtype, self.conv_algorithm,
                    out_dtype=jnp.float32)(h)
    return (self.out_factor * jnp.tanh(h)).astype(jnp.float32)


class Decoder(nn.Module):
  """Autoencoder decoder (retrofit): latent `[B, L, L, 1]` -> images `[B, 2L, 2L, nch]`.

  `latent_size` L is 16 for the paper's 32 px images."""
  ngf: int = 256
  latent_size: int = 16
  nch: int = 3
  out_factor: float = 2.0
  dtype: Any = jnp.float32
  net_name: str = 'gen_decoder32'
  conv_algorithm: str = 'direct'  # 3x3 convs: see `layers.conv`

  @nn.compact
  def __call__(self, z):
    if z.ndim != 4 or z.shape[1:] != (self.latent_size, self.latent_size, 1):
      raise ValueError(f'{self.net_name}: expected latents of shape [B, {self.latent_size},'
                       f' {self.latent_size}, 1]; got shape {tuple(z.shape)}.')
    alg = self.conv_algorithm
    # Mixed precision: as `Generator` (the convs in `dtype`, the image's conv float32 out).
    h = z.astype(jnp.float32)
    h = GenBlock(self.ngf, up=False, stem=True, dtype=self.dtype, conv_algorithm=alg,
                 name='block1')(h)
    h = GenBlock(self.ngf, up=True, dtype=self.dtype, conv_algorithm=alg, name='block2')(h)
    h = GenBlock(self.ngf, dtype=self.dtype, conv_algorithm=alg, name='block3')(h)
    h = GenBlock(self.ngf, dtype=self.dtype, conv_algorithm=alg, name='block4')(h)
    h = nn.relu(layers.batch_norm('bn_5', self.dtype)(h))
    h = layers.conv(self.nch, 3, 'conv_5', self.dtype, alg, out_dtype=jnp.float32)(h)
    return (self.out_factor * jnp.tanh(h)).astype(jnp.float32)


class Encoder(nn.Module):
  """Autoencoder encoder: images `[B, S, S, nch]` -> latents `[B, S/2, S/2, 1]`.

  Each latent is projected onto the sphere of radius `sqrt(dim)` (16 for 32 px):
  `z * sqrt(dim) / (||z|| + 1e-6)`.
  """
  ngf: int = 256
  nch: int = 3
  dtype: Any = jnp.float32
  net_name: str = 'inf_encoder32'
  conv_algorithm: str = 'direct'  # 3x3 convs: see `layers.conv`

  @nn.compact
  def __call__(self, x):
    _check_images(x, self.nch, 2, self.net_name)
    alg = self.conv_algorithm
    h = x.astype(jnp.float32)
    # Mixed precision: the convs in `dtype`, the latent's conv accumulates in float32.
    h = EBMBlock(self.ngf, down=False, stem=True, dtype=self.dtype, conv_algorithm=alg,
                 name='block1')(h)
    h = EBMBlock(self.ngf, down=True, dtype=self.dtype, conv_algorithm=alg, name='block2')(h)
    h = EBMBlock(self.ngf, dtype=self.dtype, conv_algorithm=alg, name='block3')(h)
    h = EBMBlock(self.ngf, dtype=self.dtype, conv_algorithm=alg, name='block4')(h)
    z = layers.conv(1, 3, 'conv2latent', self.dtype, alg, out_dtype=jnp.float32)(
        nn.relu(h))
    dim = z.shape[1] * z.shape[2] * z.shape[3]
    norm = jnp.sqrt(jnp.sum(z ** 2, axis=(1, 2, 3), keepdims=True))
    return z * jnp.sqrt(float(dim)) / (norm + 1e-6)


class MLPEnergy(nn.Module):
  """Toy 2D hat network: points `[B, D]` -> energy `[B, 1]` (an MLP with swish).

  Points are multiplied by `input_scale` first. The toys span `[-4, 4]^2` with detail
  ~0.35 wide (eight_gaussians' modes); on raw coordinates a Glorot-initialised swish MLP
  is close to a low-degree polynomial and learns such detail (e.g. the 8-fold angular
  structure) only after many thousands of steps (spectral bias). Scaling the input (the
  same as a larger first-layer init) lets it learn the modes in a few hundred steps.
  """
  hidden: int = 128
  depth: int = 3
  dim: int = 2
  input_scale: float = 4.0
  dtype: Any = jnp.float32
  net_name: str = 'ebm_toy'

  @nn.compact
  def __call__(self, x):
    if x.ndim != 2 or x.shape[1] != self.dim:
      raise ValueError(f'{self.net_name}: expected points of shape [B, {self.dim}]; '
                       f'got shape {tuple(x.shape)}.')
    h = (self.input_scale * x).astype(self.dtype)
    for i in range(self.depth):
      h = nn.swish(layers.dense(self.hidden, f'lin_{i + 1}', dtype=self.dtype)(h))
    return layers.dense(1, f'lin_{self.depth + 1}', dtype=self.dtype)(h).astype(
        jnp.float32)


class MLPGenerator(nn.Module):
  """Toy 2D generator: latents `[B, nz]` -> points `[B, D]` (an MLP with relu)."""
  hidden: int = 128
  depth: int = 3
  nz: int = 2
  dim: int = 2
  out_factor: float = 1.0
  dtype: Any = jnp.float32
  net_name: str = 'gen_toy'

  @nn.compact
  def __call__(self, z):
    if z.ndim != 2 or z.shape[1] != self.nz:
      raise ValueError(f'{self.net_name}: expected latents of shape [B, {self.nz}]; '
                       f'got shape {tuple(z.shape)}.')
    h = z.astype(self.dtype)
    for i in range(self.depth):
      h = nn.relu(layers.dense(self.hidden, f'lin_{i + 1}', dtype=self.dtype)(h))
    out = layers.dense(self.dim, f'lin_{self.depth + 1}', dtype=self.dtype)(h)
    return (self.out_factor * out).astype(jnp.float32)


def latent_shape(module: nn.Module) -> Tuple[int, ...]:
  """The per-sample latent shape a generator-side module takes."""
  if isinstance(module, Decoder):
    return (module.latent_size, module.latent_size, 1)
  if isinstance(module, (Generator, MLPGenerator)):
    return (module.nz,)
  raise ValueError(f'{type(module).__name__} is not a generator.')
