"""Cloud TPU slices as the planner sees them: each generation's per-chip peak FLOP/s, HBM
and bandwidth, the accelerator types (`v4-8`, `v5litepod-16`, ...) and their chip grids,
and the abstract (compile-only) devices libtpu gives for a slice."""

import dataclasses
import os
from typing import Any, Dict, List, Tuple

import jax

from hat_ebm_jax import cli

GiB = 1024 ** 3
PIP_COMMAND = "pip install -e '.[tpu]'  (or: pip install 'jax[tpu]==%s')" % jax.__version__


class PlanError(cli.UserError, ValueError):
  """Bad input to the planner: the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Generation:
  """One TPU generation. Per chip: bf16 peak FLOP/s, HBM bytes and HBM bytes/s (Cloud
  TPU system-architecture pages). `megacore`: the chip's two TensorCores form one JAX
  device (v4, v5p), so a JAX device is a chip; the number in the accelerator type then
  counts TensorCores (`v4-8` = 4 chips = 4 devices)."""
  prefix: str  # accelerator-type prefix: v4-8, v5litepod-8, ...
  topology: str  # libtpu's name: v4:2x2x1, v5e:2x4, ...
  megacore: bool
  peak_flops: float
  hbm_bytes: int
  hbm_bandwidth: float
  shapes: Dict[int, Tuple[int, ...]]  # chips -> chip grid of the slice


_SHAPES_3D = {4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4),
              128: (4, 4, 8), 256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16),
              2048: (8, 16, 16)}
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8),
              128: (8, 16), 256: (16, 16)}

GENERATIONS = (
    Generation('v4', 'v4', True, 275e12, 32 * GiB, 1.2e12, _SHAPES_3D),
    Generation('v5p', 'v5', True, 459e12, 95 * GiB, 2.765e12, _SHAPES_3D),
    Generation('v5litepod', 'v5e', False, 197e12, 16 * GiB, 0.819e12, _SHAPES_2D),
    Generation('v6e', 'v6e', False, 918e12, 32 * GiB, 1.64e12, _SHAPES_2D),
)


@dataclasses.dataclass(frozen=True)
class Slice:
  """A Cloud TPU accelerator type as JAX sees it: `devices` JAX devices, one per chip."""
  name: str
  generation: Generation
  chips: int
  topology_name: str  # e.g. 'v4:2x2x1'

  @property
  def devices(self) -> int:
    return self.chips


def slice_names() -> List[str]:
  """Every accelerator type the planner knows, e.g. `v4-8`, `v5litepod-16`."""
  return [f'{g.prefix}-{c * (2 if g.megacore else 1)}' for g in GENERATIONS
          for c in g.shapes]


def parse_slice(name: str) -> Slice:
  """`'v4-32'` -> its `Slice` (16 chips as `v4:2x2x4`). Raises PlanError listing the
  valid names for anything else."""
  for g in GENERATIONS:
    for chips, shape in g.shapes.items():
      if name == f'{g.prefix}-{chips * (2 if g.megacore else 1)}':
        return Slice(name, g, chips, f'{g.topology}:{"x".join(map(str, shape))}')
  raise PlanError(f'Unknown TPU topology {name!r}; use a Cloud TPU accelerator type: '
                  f'{", ".join(slice_names())}.')


def slice_devices(s: Slice) -> List[Any]:
  """The slice's abstract (compile-only) TPU devices, `s.devices` of them.

  Megacore generations are asked for `chip_config_name='megacore'`: libtpu's default
  for `v4:2x2x1` is one device per TensorCore (8), which is not what a v4-8 runs.
  """
  try:
    import libtpu  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise PlanError(f'Compiling for TPU needs libtpu, which is not installed ({e}). '
                    f'Install it: {PIP_COMMAND}') from e
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  # Compile-only devices claim no chip: let several planners (pytest-xdist workers, a
  # planner beside a test run) load libtpu at once instead of failing on its lockfile.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  kwargs = dict(chip_config_name='megacore' if s.generation.megacore else 'default',
                chips_per_host_bounds=_host_bounds(s))
  devices = topologies.get_topology_desc(topology_name=s.topology_name, platform='tpu',
                                         **kwargs).devices
  if len(devices) != s.devices:
    raise RuntimeError(f'libtpu gave {len(devices)} devices for {s.name} '
                       f'({s.topology_name}, {kwargs}); expected {s.devices}.')
  return list(devices)


def _host_bounds(s: Slice) -> Tuple[int, int, int]:
  """Chips per host: 4 (2x2), except the single-host 8-chip v5e/v6e slices (2x4) and
  the 1-chip ones. Only the host layout of the abstract devices depends on it."""
  if s.chips == 1:
    return (1, 1, 1)
  if s.chips == 8 and not s.generation.megacore:
    return (2, 4, 1)
  return (2, 2, 1)
