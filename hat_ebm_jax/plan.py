"""Plan a Cloud TPU run on any machine: compile a config's real step for a TPU slice.

    python -m hat_ebm_jax.plan --config=configs/cifar10_synth.py --topology=v4-8
    python -m hat_ebm_jax.plan --config=configs/cifar10_synth.py:eval --topology=v4-8 \\
        --what=eval
    python -m hat_ebm_jax.plan --config=configs/imagenet128.py --topology=v4-32 \\
        --config.dtype=bfloat16

Needs libtpu (`pip install -e '.[tpu]'`), not a TPU: XLA compiles for the abstract
devices of `jax.experimental.topologies.get_topology_desc`, as MaxText's
`train_compile.py` does. The step is the one training runs (`train.make_train_step`,
or the evaluation sampler of `evaluate.sample_batches` with `--what=eval`), with the
shardings training uses (`sharding.state_shardings`, batches along `data`) over a mesh of
the slice's devices. The state is abstract (`jax.eval_shape`): no parameter is
materialised, and joint mode's pretrained generator is a `ShapeDtypeStruct` tree, so
`config.gen_weights` need not exist. Platform choices (`conv_algorithm='auto'`,
`mcmc_unroll='auto'`) resolve for TPU, not for the host.

The report (a table, then one JSON line) gives per device: HBM (arguments, temporaries,
outputs) against the chip's capacity; FLOPs per step with the sampler's trip count
included (the compiled step counts a rolled loop's body once, so one loop body is
compiled apart and added `num_loop_bodies - 1` more times); a step-time lower bound
`max(FLOPs / peak, bytes / HBM bandwidth)` and, where positive, XLA's cost-model
estimate; hours for `num_training_steps`; collectives by kind with bytes per step
(inside the loop multiplied by its trip count); and the compile time.

Exit codes: 0 fits, 1 does not fit (the report names the largest buffers), 2 bad input
(unknown topology, libtpu missing, a batch that does not divide over the slice).
"""

import collections
import dataclasses
import json
import os
import re
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hat_ebm_jax import cli, config_lib, langevin, models, modes, sharding
from hat_ebm_jax.modes import base

GiB = 1024 ** 3
PIP_COMMAND = "pip install -e '.[tpu]'  (or: pip install 'jax[tpu]==%s')" % jax.__version__


class PlanError(cli.UserError, ValueError):
  """Bad input to the planner: the message names the problem and the fix."""


# --- Cloud TPU slices ------------------------------------------------------------------------

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


# --- the programs ------------------------------------------------------------------------

def _structs(tree, shardings):
  return jax.tree_util.tree_map(
      lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), tree, shardings)


def abstract_gen_variables(config, platform: str):
  """The generator's variables as `ShapeDtypeStruct`s (joint mode's frozen net)."""
  gen = models.make_generator(config, platform)
  return jax.eval_shape(lambda k: models.init_variables(gen, k, config.image_size),
                        jax.random.PRNGKey(0))


def build_mode(config, platform: str):
  """`modes.create` for `platform`, with abstract generator variables in joint mode."""
  gen_v = abstract_gen_variables(config, platform) if config.mode == 'joint' else None
  return modes.create(config, platform=platform, gen_variables=gen_v)


def abstract_state(mode, mesh):
  """`jax.eval_shape(mode.init_state)` as `ShapeDtypeStruct`s with training's shardings.
  Returns `(state, state_shardings)`."""
  state = jax.eval_shape(mode.init_state, jax.random.PRNGKey(0))
  state_sh = sharding.state_shardings(state, mesh)
  return _structs(state, state_sh), state_sh


@dataclasses.dataclass
class Programs:
  """What to compile: the step, one sampler loop body, and how often that body runs."""
  what: str
  step: Any  # a function with .lower(*args)
  step_args: Tuple
  body: Optional[Any]
  body_args: Tuple
  loop_bodies: int  # loop bodies per step (0: no sampler)
  steps_per_run: int
  batch: int


def _body_program(mode, state, mesh, n: int, use_ema: bool = False):
  """One sampler loop body (`langevin.loop_body`) on one device's share of `n` chains.

  Compiled for the slice's first device alone, with its `n / D` chains: the per-device
  FLOPs and bytes are those of the body inside the `D`-device step (all its work is
  along the chains; its one collective, the mean of a diagnostic norm, adds no FLOPs),
  and the compile skips SPMD partitioning (about 10% less compile time; the figures
  agree to 1e-6 on a narrow `cifar10_synth`, `tests/test_plan.py`). The mesh is `data`
  only (`sharding.create_mesh`); a `model` axis would need the whole mesh here.
  """
  one = sharding.create_mesh(list(mesh.devices.flat)[:1])
  rep = sharding.replicated(one)

  def local(tree):
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), tree)

  ebm_v = local(_variables(mode, state, 'ebm', use_ema))
  gen_v = local(_variables(mode, state, 'gen', use_ema))
  d = sharding.data_size(mesh)
  n_local = n // d if n % d == 0 else n  # `sharding.sample_sharding`: else replicated
  z = jax.ShapeDtypeStruct((n_local,) + mode.latent_shape, jnp.float32, sharding=rep)
  y = jax.ShapeDtypeStruct((n_local,) + mode.data_shape(), jnp.float32, sharding=rep)
  key = local(jax.eval_shape(lambda: jax.random.PRNGKey(0)))

  def body(ebm_v, gen_v, z, y, x_gen, key):
    return langevin.loop_body(mode.sampler, langevin.nets(mode.ebm, ebm_v),
                              langevin.nets(mode.gen, gen_v), z, y, x_gen, key)

  return sharding.jit(body, one), (ebm_v, gen_v, z, y, y, key)


def _variables(mode, state, name, use_ema):
  del mode
  return base.variables(state, name, use_ema)


def train_programs(config, mesh, platform: str = 'tpu') -> Programs:
  """The training step `train.make_train_step` builds, on abstract inputs."""
  from hat_ebm_jax import train  # pylint: disable=g-import-not-at-top
  if config.mode == 'evaluate':
    raise PlanError(f'config.mode is {config.mode!r}: plan an evaluation config with '
                    '--what=eval, or a training config with --what=train.')
  _validate(config)
  sharding.check_batch_divides(config.batch_size, mesh)
  mode = build_mode(config, platform)
  state, state_sh = abstract_state(mode, mesh)
  batch_sh = sharding.batch_sharded(mesh)
  batch = jax.ShapeDtypeStruct((config.batch_size,) + _data_shape(mode, config),
                               jnp.float32, sharding=batch_sh)
  if mode.host_phase is not None:
    raise RuntimeError(f'The training step for {platform} runs from the host; plan a '
                       'device platform.')
  step = train.make_train_step(mode, mesh, state_sh, batch_sh)
  body, body_args, bodies = None, (), 0
  if isinstance(mode, base.HatEBMMode):  # a Langevin sampler in the step
    bodies = langevin.num_loop_bodies(mode.sampler)
    body, body_args = _body_program(mode, state, mesh, config.batch_size)
  return Programs('train', step, (state, batch), body, body_args, bodies,
                  int(config.num_training_steps), int(config.batch_size))


def _validate(config) -> None:
  """`config_lib.validate`, except that joint mode needs no `gen_weights` here (its
  generator is abstract)."""
  if config.mode == 'joint' and not config.gen_weights:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.gen_weights = '(abstract)'
  config_lib.validate(config)


def _data_shape(mode, config):
  if isinstance(mode, base.HatEBMMode):
    return tuple(mode.data_shape())
  return (config.image_size, config.image_size, config.nch)


def eval_programs(config, mesh, platform: str = 'tpu') -> Programs:
  """The evaluation sampler `evaluate.sample_batches` runs, on abstract inputs."""
  from hat_ebm_jax import evaluate  # pylint: disable=g-import-not-at-top
  if config.mode != 'evaluate':
    raise PlanError(f'--what=eval plans an evaluation config (config.mode=evaluate, '
                    f'e.g. configs/cifar10_synth.py:eval); this one has mode '
                    f'{config.mode!r}.')
  config_lib.validate(config)
  evaluate.check_config(config, sharding.data_size(mesh))
  train_cfg = evaluate.training_config(config, None)
  mode = build_mode(train_cfg, platform)
  state, state_sh = abstract_state(mode, mesh)
  n = int(config.eval_batch_size)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
  step = sharding.jit(lambda s, k: mode.sample(s, k, n), mesh,
                      in_shardings=(state_sh, sharding.replicated(mesh)),
                      out_shardings=sharding.batch_sharded(mesh))
  body, body_args = _body_program(mode, state, mesh, n, bool(config.use_ema))
  batches = max(int(config.num_eval_samples) // n, 1)
  return Programs('eval', step, (state, key), body, body_args,
                  langevin.num_loop_bodies(mode.sampler), batches, n)


# --- what the compiled programs say ------------------------------------------------------------

_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2,
                's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8,
                'c128': 16, 'f8e4m3fn': 1, 'f8e5m2': 1, 's4': 1, 'u4': 1}
_SHAPE = re.compile(r'\b(' + '|'.join(sorted(_DTYPE_BYTES, key=len, reverse=True))
                    + r')\[([0-9,]*)\]')
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute',
               'all-to-all')
_OP = re.compile(r'=\s*(.*?)\s(' + '|'.join(COLLECTIVES) + r')(-start)?\((.*)$')
_COMP = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_CALLS = re.compile(r'(?:calls|to_apply|body|condition|branch_computations)='
                    r'(\{[^}]*\}|%?[\w.\-]+)')
_WHILE = re.compile(r'\swhile\(.*body=%?([\w.\-]+)')
_TRIP = re.compile(r'known_trip_count[^0-9]*([0-9]+)')
_DEF = re.compile(r'^\s+(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s[\w\-]+\(')
_OPNAME = re.compile(r'op_name="([^"]*)"')
_SOURCE = re.compile(r'source_file="([^"]*)"\s+source_line=([0-9]+)')


def shape_bytes(text: str) -> int:
  """Total bytes of the array shapes written in `text` (e.g. 'f32[8,4]{1,0} %x')."""
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    total += _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d]))
  return total


def _operands(rest: str) -> str:
  """The operand list of an instruction, given the text after its opening parenthesis."""
  depth = 1
  for i, ch in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(ch, 0)
    if depth == 0:
      return rest[:i]
  return rest


def collectives(hlo_text: str, loop_trips: Optional[int] = None) -> List[Dict]:
  """Every collective of an optimized HLO module: kind, operand bytes per device, how
  many times a step runs it (a while body's trip count: XLA's `known_trip_count`, else
  `loop_trips`), and where it came from (`op_name`, source line)."""
  comps: Dict[str, List[str]] = {}
  shapes: Dict[str, Dict[str, str]] = {}  # computation -> instruction -> result shape
  current = None
  for line in hlo_text.splitlines():
    m = _COMP.match(line)
    if m and not line.startswith(' '):  # a computation's header (unindented)
      current = m.group(1)
      comps[current], shapes[current] = [], {}
    elif current is not None:
      comps[current].append(line)
      d = _DEF.match(line)
      if d:
        shapes[current][d.group(1)] = d.group(2)
  entry = next((name for name in comps
                if re.search(r'^ENTRY\s+%?' + re.escape(name) + r'\s', hlo_text, re.M)),
               None)
  runs: Dict[str, int] = collections.defaultdict(int)

  def visit(name, times, depth=0):
    if name not in comps or depth > 50:
      return
    runs[name] += times
    for line in comps[name]:
      w = _WHILE.search(line)
      trips = None
      if w:
        t = _TRIP.search(line)
        trips = int(t.group(1)) if t else (loop_trips or 1)
      for target in _CALLS.findall(line):
        for callee in re.findall(r'[\w.\-]+', target):
          visit(callee, times * (trips if w and callee == w.group(1) else 1), depth + 1)

  if entry is None:
    return []
  visit(entry, 1)
  out = []
  for name, lines in comps.items():
    if not runs.get(name):
      continue
    for line in lines:
      m = _OP.search(line)
      if not m:
        continue
      op = _OPNAME.search(line)
      src = _SOURCE.search(line)
      operands = re.findall(r'%([\w.\-]+)', _operands(m.group(4)))
      # XLA:TPU emits a reduce-scatter as a fusion around an all-reduce.
      kind = 'reduce-scatter' if name.startswith('all-reduce-scatter') else m.group(2)
      out.append(dict(kind=kind,
                      bytes=sum(shape_bytes(shapes[name].get(o, '')) for o in operands),
                      runs=runs[name], op_name=op.group(1) if op else '',
                      source=f'{src.group(1).split("/")[-1]}:{src.group(2)}' if src else ''))
  return out


def collective_summary(items: List[Dict]) -> Dict[str, Dict[str, int]]:
  """`{kind: {'ops': in the HLO, 'per_step': runs per step, 'bytes_per_step': ...}}`."""
  out = {k: dict(ops=0, per_step=0, bytes_per_step=0) for k in COLLECTIVES}
  for c in items:
    s = out[c['kind']]
    s['ops'] += 1
    s['per_step'] += c['runs']
    s['bytes_per_step'] += c['runs'] * c['bytes']
  return out


def cost_dict(cost) -> Dict[str, float]:
  """A `cost_analysis()` result as one `{name: value}` dict: jax versions return a dict,
  or a list of dicts (one per program), whose values are then summed."""
  if not isinstance(cost, (list, tuple)):
    return dict(cost or {})
  out: Dict[str, float] = {}
  for c in cost:
    for k, v in (c or {}).items():
      out[k] = out.get(k, 0.0) + float(v)
  return out


def _cost(compiled) -> Dict[str, float]:
  return cost_dict(compiled.cost_analysis())


def _largest_buffers(hlo_text: str, k: int = 5) -> List[Tuple[str, int]]:
  """The `k` largest instruction results of the optimized HLO, with their op names."""
  found = []
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(?[^=]*?)\s[\w\-]+\(', line)
    if not m:
      continue
    op = _OPNAME.search(line)
    found.append((op.group(1) if op else m.group(1), shape_bytes(m.group(2))))
  found.sort(key=lambda t: -t[1])
  seen, out = set(), []
  for name, b in found:
    if name not in seen:
      seen.add(name)
      out.append((name, b))
    if len(out) == k:
      break
  return out


def _largest_arguments(args, k: int = 5) -> List[Tuple[str, int]]:
  """The `k` largest per-device argument leaves (by path)."""
  leaves = []
  for path, a in jax.tree_util.tree_flatten_with_path(args)[0]:
    shard = a.sharding.shard_shape(a.shape) if a.sharding is not None else a.shape
    leaves.append((jax.tree_util.keystr(path),
                   int(np.prod(shard)) * np.dtype(a.dtype).itemsize))
  return sorted(leaves, key=lambda t: -t[1])[:k]


def plan(config, slice_name: str, what: str = 'train',
         hbm_bytes: Optional[int] = None) -> Dict[str, Any]:
  """Compiles `config`'s step for the slice `slice_name` and returns the report dict.

  `hbm_bytes`: the HBM per device to fit in (default: the chip's)."""
  s = parse_slice(slice_name)
  devices = slice_devices(s)
  sharding.configure_jax()
  mesh = sharding.create_mesh(devices)
  if what not in ('train', 'eval'):
    raise PlanError(f"--what must be 'train' or 'eval'; got {what!r}.")
  build = train_programs if what == 'train' else eval_programs
  progs = build(config, mesh, 'tpu')

  t0 = time.perf_counter()
  lowered = progs.step.lower(*progs.step_args)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - t0
  hlo = compiled.as_text()
  cost = _cost(compiled)
  mem = compiled.memory_analysis()
  has_loop = bool(re.search(r'\swhile\(', hlo))

  body_cost, body_compile_s = {}, 0.0
  if progs.body is not None and progs.loop_bodies > 1 and has_loop:
    t0 = time.perf_counter()
    body_cost = _cost(progs.body.lower(*progs.body_args).compile())
    body_compile_s = time.perf_counter() - t0
  # The compiled step counts a rolled loop's body once; add the other trips.
  extra = (progs.loop_bodies - 1) if has_loop else 0

  def total(key):
    return float(cost.get(key, 0.0)) + extra * float(body_cost.get(key, 0.0))

  flops = total('flops')
  bytes_accessed = total('bytes accessed')
  g = s.generation
  seconds_flops = flops / g.peak_flops
  seconds_bytes = bytes_accessed / g.hbm_bandwidth
  opt = total('optimal_seconds') if 'optimal_seconds' in cost else -1.0
  cost_model_s = opt if opt > 0 and float(cost.get('optimal_seconds', -1)) > 0 else None
  lower_bound = max(seconds_flops, seconds_bytes)
  est = max(lower_bound, cost_model_s or 0.0)

  coll = collectives(hlo, progs.loop_bodies)
  summary = collective_summary(coll)
  args_b, temp_b = int(mem.argument_size_in_bytes), int(mem.temp_size_in_bytes)
  out_b, alias_b = int(mem.output_size_in_bytes), int(mem.alias_size_in_bytes)
  code_b = int(getattr(mem, 'generated_code_size_in_bytes', 0))
  hbm_total = args_b + temp_b + out_b - alias_b + code_b
  capacity = int(hbm_bytes or g.hbm_bytes)
  fits = hbm_total <= capacity
  report = dict(
      config=str(config.get('exp_name', '')), mode=str(config.mode), what=what,
      topology=s.name, topology_desc=s.topology_name, devices=s.devices,
      dtype=str(config.dtype), batch=progs.batch, mesh={k: int(v) for k, v in
                                                       mesh.shape.items()},
      hbm_per_device=dict(arguments=args_b, temporaries=temp_b, outputs=out_b,
                          aliased=alias_b, code=code_b, total=hbm_total,
                          capacity=capacity, headroom=capacity - hbm_total),
      fits=fits,
      flops_per_step=flops * s.devices, flops_per_step_per_device=flops,
      flops_compiled_step_per_device=float(cost.get('flops', 0.0)),
      flops_loop_body_per_device=float(body_cost.get('flops', 0.0)),
      loop_bodies=progs.loop_bodies, rolled_loop=has_loop,
      peak_flops_per_device=g.peak_flops, hbm_bandwidth_per_device=g.hbm_bandwidth,
      seconds_flop_bound=seconds_flops, seconds_hbm_bound=seconds_bytes,
      seconds_cost_model=cost_model_s, seconds_per_step=est,
      steps_per_run=progs.steps_per_run, hours_per_run=est * progs.steps_per_run / 3600,
      collectives=summary,
      collective_bytes_per_step=sum(v['bytes_per_step'] for v in summary.values()),
      collective_sources=_group_sources(coll),
      compile_seconds=compile_s, loop_body_compile_seconds=body_compile_s)
  if not fits:
    report['largest_arguments'] = _largest_arguments(progs.step_args)
    report['largest_buffers'] = _largest_buffers(hlo)
  return report


def _group_sources(items: List[Dict]) -> List[Dict]:
  """Collectives grouped by (kind, op name without the jit prefix), largest first."""
  groups: Dict[Tuple[str, str], Dict] = {}
  for c in items:
    name = re.sub(r'^jit\([^)]*\)/', '', c['op_name'])
    g = groups.setdefault((c['kind'], name), dict(kind=c['kind'], op_name=name,
                                                   source=c['source'], ops=0,
                                                   per_step=0, bytes_per_step=0))
    g['ops'] += 1
    g['per_step'] += c['runs']
    g['bytes_per_step'] += c['runs'] * c['bytes']
  return sorted(groups.values(), key=lambda g: -g['bytes_per_step'])


def _size(b: float) -> str:
  for unit, div in (('GiB', GiB), ('MiB', 1024 ** 2), ('KiB', 1024)):
    if abs(b) >= div:
      return f'{b / div:.2f} {unit}'
  return f'{int(b)} B'


def format_report(r: Dict[str, Any]) -> str:
  """The readable table (the JSON line follows it in `main`)."""
  h = r['hbm_per_device']
  rows = [
      ('config', f"{r['config']} ({r['mode']}, {r['what']}, {r['dtype']}, batch "
                 f"{r['batch']})"),
      ('slice', f"{r['topology']} = {r['topology_desc']}: {r['devices']} devices, mesh "
                f"{r['mesh']}"),
      ('HBM per device', f"{_size(h['total'])} of {_size(h['capacity'])} "
                         f"(headroom {_size(h['headroom'])}; "
                         f"{'fits' if r['fits'] else 'DOES NOT FIT'})"),
      ('  arguments / temporaries / outputs / aliased',
       f"{_size(h['arguments'])} / {_size(h['temporaries'])} / {_size(h['outputs'])} / "
       f"{_size(h['aliased'])}"),
      ('FLOPs per step (all devices)', f"{r['flops_per_step'] / 1e9:,.1f} GFLOP"),
      ('  per device: compiled step + (bodies - 1) x loop body',
       f"{r['flops_compiled_step_per_device'] / 1e9:,.2f} + "
       f"{max(r['loop_bodies'] - 1, 0) if r['rolled_loop'] else 0} x "
       f"{r['flops_loop_body_per_device'] / 1e9:,.3f} GFLOP"),
      ('step time lower bound', f"{r['seconds_flop_bound']:.4f} s FLOP-bound (peak "
                                f"{r['peak_flops_per_device'] / 1e12:.0f} TFLOP/s bf16 "
                                f"per chip), {r['seconds_hbm_bound']:.4f} s HBM-bound"),
      ('cost model', 'n/a (no positive optimal_seconds)' if r['seconds_cost_model'] is None
       else f"{r['seconds_cost_model']:.4f} s"),
      ('est. seconds per step', f"{r['seconds_per_step']:.4f}"),
      ('hours per run', f"{r['hours_per_run']:.2f} ({r['steps_per_run']} steps)"),
      ('collective bytes per step per device', _size(r['collective_bytes_per_step'])),
  ]
  for kind, v in r['collectives'].items():
    if v['ops']:
      rows.append((f'  {kind}', f"{v['ops']} ops, {v['per_step']} per step, "
                                f"{_size(v['bytes_per_step'])} per step"))
  rows.append(('compile', f"{r['compile_seconds']:.1f} s (loop body "
                          f"{r['loop_body_compile_seconds']:.1f} s)"))
  if not r['fits']:
    for name, b in r.get('largest_arguments', []):
      rows.append(('  largest argument', f'{_size(b)} {name}'))
    for name, b in r.get('largest_buffers', []):
      rows.append(('  largest buffer', f'{_size(b)} {name}'))
  width = max(len(k) for k, _ in rows)
  return '\n'.join(f'{k.ljust(width)}  {v}' for k, v in rows)


def main(argv=None) -> int:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flag = config_flags.DEFINE_config_file('config', None, 'Experiment config.',
                                                lock_config=True)
  topology = flags.DEFINE_string('topology', None, 'Cloud TPU accelerator type, e.g. '
                                 'v4-8, v4-32, v5litepod-8, v5p-8, v6e-8.')
  what = flags.DEFINE_enum('what', 'train', ['train', 'eval'], 'The training step, or '
                           'the evaluation sampler of a configs/<experiment>.py:eval '
                           'config.')
  hbm_gib = flags.DEFINE_float('hbm_gib', None, 'HBM per device to fit in, GiB '
                               '(default: the chip\'s).')
  flags.mark_flags_as_required(['config', 'topology'])

  def run(_):
    # A bad topology, config or batch is the user's: one line, exit 2 (`cli.run`).
    with cli.user_errors(ValueError):
      report = plan(config_flag.value, topology.value, what.value,
                    int(hbm_gib.value * GiB) if hbm_gib.value else None)
    print(format_report(report))
    print(json.dumps(report, default=float))
    return 0 if report['fits'] else 1

  try:
    cli.run(lambda a: sys.exit(run(a)), argv=argv)
  except SystemExit as e:
    return int(e.code or 0)
  return 0


if __name__ == '__main__':
  sys.exit(main())
