"""Model factory: `create(name, **kwargs)` returns a Flax Linen module (docs/algorithm.md §2).

Names: `ebm_sngan32`, `ebm_sngan64`, `ebm_sngan128`, `gen_sngan32`, `gen_sngan64`,
`gen_sngan128`, `gen_decoder32`, `inf_encoder32`, and the 2D toys `ebm_toy`, `gen_toy`.
Keyword arguments: `ngf`, `nch`, `dtype`; generators also `nz`, `out_factor`, and
`bottom` (spatial size after the dense layer: 4 gives 32 px for `gen_sngan32`, 2 gives a
16 px variant); the decoder takes `latent_size` (16 for 32 px images). Defaults are the paper's widths.

From a run config: `make_ebm(config, platform)`, `make_generator(config, platform)` and
`make_encoder(config, platform)` build the nets `config.ebm_type`, `gen_type` and
`inf_type`; `net_kwargs(module)` is the inverse of `create` (what `net.json` records).
"""

import inspect
from typing import Any, Callable, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from hat_ebm_jax.models import layers
from hat_ebm_jax.models.nets import (Decoder, EBM, Encoder, Generator, MLPEnergy,
                                     MLPGenerator, latent_shape)

__all__ = ['create', 'NAMES', 'init_variables', 'input_shape', 'latent_shape', 'EBM',
           'Generator', 'Decoder', 'Encoder', 'MLPEnergy', 'MLPGenerator', 'make_ebm',
           'make_generator', 'make_encoder', 'net_kwargs', 'compute_variables']


def _ebm(name, n_blocks_down, extra_same):
  def make(ngf, nch=3, dtype=jnp.float32, conv_algorithm='direct'):
    if n_blocks_down == 0:  # 32 px: stem down, block(down), block, block; all width ngf
      widths, downs = [ngf] * 4, [True, False, False]
    else:  # stem to ngf/16, then doubling blocks with down (and a same-width block)
      widths = [ngf // 2 ** (n_blocks_down - i) for i in range(n_blocks_down + 1)]
      downs = [True] * n_blocks_down
      if extra_same:
        widths, downs = widths + [ngf], downs + [False]
    return EBM(widths=tuple(widths), downs=tuple(downs), nch=nch, dtype=dtype,
               net_name=name, conv_algorithm=conv_algorithm)
  return make


def _gen(name, widths_fn):
  def make(ngf, nz=128, nch=3, out_factor=1.0, bottom=4, dtype=jnp.float32,
           conv_algorithm='direct'):
    return Generator(ngf=ngf, widths=tuple(widths_fn(ngf)), nz=nz, bottom=bottom,
                     nch=nch, out_factor=out_factor, dtype=dtype, net_name=name,
                     conv_algorithm=conv_algorithm)
  return make


_FACTORIES: Dict[str, Callable[..., nn.Module]] = {
    'ebm_sngan32': _ebm('ebm_sngan32', 0, False),
    'ebm_sngan64': _ebm('ebm_sngan64', 4, False),
    'ebm_sngan128': _ebm('ebm_sngan128', 4, True),
    'gen_sngan32': _gen('gen_sngan32', lambda n: [n, n, n]),
    'gen_sngan64': _gen('gen_sngan64', lambda n: [n // 2, n // 4, n // 8, n // 16]),
    'gen_sngan128': _gen('gen_sngan128',
                         lambda n: [n, n // 2, n // 4, n // 8, n // 16]),
    'gen_decoder32': lambda ngf, nch=3, out_factor=2.0, latent_size=16,
    dtype=jnp.float32, conv_algorithm='direct': Decoder(
        ngf=ngf, nch=nch, out_factor=out_factor, latent_size=latent_size, dtype=dtype,
        conv_algorithm=conv_algorithm),
    'inf_encoder32': lambda ngf, nch=3, dtype=jnp.float32, conv_algorithm='direct': Encoder(
        ngf=ngf, nch=nch, dtype=dtype, conv_algorithm=conv_algorithm),
    'ebm_toy': lambda ngf=128, dim=2, depth=3, input_scale=4.0, dtype=jnp.float32:
    MLPEnergy(hidden=ngf, depth=depth, dim=dim, input_scale=input_scale, dtype=dtype),
    'gen_toy': lambda ngf=128, nz=2, dim=2, depth=3, out_factor=1.0,
    dtype=jnp.float32: MLPGenerator(hidden=ngf, depth=depth, nz=nz, dim=dim,
                                    out_factor=out_factor, dtype=dtype),
}

_DEFAULT_NGF = {'ebm_sngan32': 256, 'ebm_sngan64': 1024, 'ebm_sngan128': 1024,
                'gen_sngan32': 256, 'gen_sngan64': 1024, 'gen_sngan128': 1024,
                'gen_decoder32': 256, 'inf_encoder32': 256, 'ebm_toy': 128,
                'gen_toy': 128}

NAMES = tuple(_FACTORIES)


def _dtype(dtype: Any):
  if isinstance(dtype, str):
    try:
      return {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
              'float16': jnp.float16}[dtype]
    except KeyError:
      raise ValueError(f"dtype must be 'float32', 'bfloat16' or 'float16'; got {dtype!r}.")
  return dtype


CONV_ALGORITHMS = ('auto', 'direct', 'winograd')


def resolve_conv_algorithm(algorithm: str, backend: str = None) -> str:
  """`config.conv_algorithm` -> the nets' `conv_algorithm` (see `layers.conv`).

  'auto': on CPU, Winograd F(4x4, 3x3) for the float32 3x3 convs where it was measured
  faster ('winograd_large': maps of 16x16 or more, 64 or more channels), direct
  elsewhere; on GPU and TPU direct (cuDNN and XLA:TPU choose their own algorithms).
  'winograd': Winograd for every float32 3x3 conv on maps whose sides are multiples of 4.
  'direct': `lax.conv_general_dilated` everywhere.
  """
  if algorithm in layers.CONV_ALGORITHMS:
    return algorithm
  if algorithm == 'auto':
    return 'winograd_large' if (backend or jax.default_backend()) == 'cpu' else 'direct'
  raise ValueError(f'conv_algorithm must be one of {CONV_ALGORITHMS}; got {algorithm!r}.')


def create(name: str, backend: str = None, **kwargs) -> nn.Module:
  """Builds the network `name` (see module docstring) with keyword overrides.

  `backend` is the platform the net will be compiled for ('cpu', 'gpu', 'tpu'; default
  `jax.default_backend()`): `conv_algorithm='auto'` resolves for it, so a TPU program
  planned on a CPU host gets TPU's direct convs (`hat_ebm_jax.plan`).
  """
  if name not in _FACTORIES:
    raise ValueError(f'Unknown net {name!r}; known nets: {", ".join(NAMES)}.')
  factory = _FACTORIES[name]
  allowed = set(inspect.signature(factory).parameters)
  unknown = set(kwargs) - allowed
  if unknown:
    raise ValueError(f'{name}: unknown argument(s) {sorted(unknown)}; allowed: '
                     f'{sorted(allowed)}.')
  kwargs.setdefault('ngf', _DEFAULT_NGF[name])
  if 'dtype' in kwargs:
    kwargs['dtype'] = _dtype(kwargs['dtype'])
  if 'conv_algorithm' in kwargs:
    kwargs['conv_algorithm'] = resolve_conv_algorithm(kwargs['conv_algorithm'], backend)
  if kwargs['ngf'] <= 0 or (name.startswith(('ebm_sngan64', 'ebm_sngan128',
                                             'gen_sngan64', 'gen_sngan128'))
                            and kwargs['ngf'] % 16):
    raise ValueError(f'{name}: ngf must be positive (and a multiple of 16 for 64/128 px '
                     f'nets); got {kwargs["ngf"]}.')
  return factory(**kwargs)


def input_shape(module: nn.Module, image_size: int = 32) -> tuple:
  """Per-sample input shape of `module` (latent shape for generators)."""
  if isinstance(module, (Generator, Decoder, MLPGenerator)):
    return latent_shape(module)
  if isinstance(module, MLPEnergy):
    return (module.dim,)
  return (image_size, image_size, module.nch)


def init_variables(module: nn.Module, rng: jax.Array, image_size: int = 32) -> Dict:
  """Keras-style initial variables `{'params': ..., 'batch_stats': ...}` for a batch of 1.

  Batch-norm moving statistics start at mean 0, variance 1 as in Keras.
  """
  x = jnp.zeros((1,) + input_shape(module, image_size), jnp.float32)
  return jax.jit(module.init)(rng, x)


def net_kwargs(module: nn.Module) -> Dict:
  """The `create` keyword arguments that rebuild `module` (saved as `net.json` with its
  weights): `create(name, **net_kwargs(module)) == module` for the paper's nets."""
  kw = {'nch': module.nch} if hasattr(module, 'nch') else {}
  if isinstance(module, EBM):
    kw['ngf'] = module.widths[-1]
  elif isinstance(module, Generator):
    kw.update(ngf=module.ngf, nz=module.nz, out_factor=module.out_factor,
              bottom=module.bottom)
  elif isinstance(module, Decoder):
    kw.update(ngf=module.ngf, out_factor=module.out_factor, latent_size=module.latent_size)
  elif isinstance(module, Encoder):
    kw.update(ngf=module.ngf)
  elif isinstance(module, MLPGenerator):
    kw.update(ngf=module.hidden, depth=module.depth, nz=module.nz, dim=module.dim,
              out_factor=module.out_factor)
  elif isinstance(module, MLPEnergy):
    kw.update(ngf=module.hidden, depth=module.depth, dim=module.dim,
              input_scale=module.input_scale)
  return kw


# --- the nets of a run config -----------------------------------------------------------
# `platform` ('cpu', 'gpu', 'tpu'; default `jax.default_backend()`): where the net will be
# compiled, for `config.conv_algorithm='auto'` (see `create`).


def make_ebm(config, platform: str = None) -> nn.Module:
  """The hat network `config.ebm_type` (conv EBM or toy MLP)."""
  c = config
  if c.ebm_type == 'ebm_toy':
    return create(c.ebm_type, ngf=c.ebm_ngf, dtype=c.dtype)
  return create(c.ebm_type, ngf=c.ebm_ngf, nch=c.nch, dtype=c.dtype,
                conv_algorithm=c.conv_algorithm, backend=platform)


def make_generator(config, platform: str = None) -> nn.Module:
  """The generator-side net `config.gen_type` (SN-GAN generator, AE decoder, toy MLP)."""
  c = config
  if c.gen_type == 'gen_toy':
    return create(c.gen_type, ngf=c.gen_ngf, nz=c.z_sz, out_factor=c.gen_factor,
                  dtype=c.dtype)
  kw = dict(ngf=c.gen_ngf, nch=c.nch, out_factor=c.gen_factor, dtype=c.dtype,
            conv_algorithm=c.conv_algorithm, backend=platform)
  if c.gen_type.startswith('gen_sngan'):
    kw.update(nz=c.z_sz, bottom=c.gen_bottom)
  elif c.gen_type == 'gen_decoder32':
    kw.update(latent_size=c.image_size // 2)
  else:
    raise ValueError(f'config.gen_type={c.gen_type!r} is not a generator; use gen_sngan32/'
                     '64/128, gen_decoder32 or gen_toy.')
  return create(c.gen_type, **kw)


def make_encoder(config, platform: str = None) -> nn.Module:
  """The autoencoder's encoder `config.inf_type`."""
  c = config
  return create(c.inf_type, ngf=c.inf_ngf, nch=c.nch, dtype=c.dtype,
                conv_algorithm=c.conv_algorithm, backend=platform)


def compute_variables(module: nn.Module, variables: Any) -> Any:
  """`variables` as `module` reads them when it computes in a narrower `dtype`: every conv
  kernel (a 4-D `kernel` leaf) cast to the module's `dtype`; everything else unchanged.

  The convs cast their kernels to `dtype` themselves, so `module.apply` gives the same
  numbers, and the same float32 parameter gradients, either way. Cast once before the
  Langevin loop (`modes.base`), a bfloat16 sampler reads its conv weights at 2 bytes,
  not 4, in every step (docs/tpu_plan.md). Float32 modules get `variables` back as is.
  """
  dtype = jnp.dtype(getattr(module, 'dtype', jnp.float32))
  if dtype == jnp.float32:
    return variables

  def cast(path, leaf):
    name = getattr(path[-1], 'key', None) if path else None
    if name == 'kernel' and getattr(leaf, 'ndim', 0) == 4:
      return leaf.astype(dtype)
    return leaf
  return jax.tree_util.tree_map_with_path(cast, variables)
