"""The plan of a Cloud TPU run: compile a config's real step for a TPU slice, report it.

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
compiled apart and added `num_loop_bodies - 1` more times); a roofline step time
`max(FLOPs / peak, bytes / HBM bandwidth)` and, where positive, XLA's cost-model
estimate; hours for `num_training_steps`; collectives by kind with bytes per step
(inside the loop multiplied by its trip count); the step's traffic split by memory space
(`hlo.memory_space_traffic`: the HBM against on-chip memory such as v4's CMEM, which
XLA's `bytes accessed` counts at one rate); and the compile time.

Exit codes: 0 fits, 1 does not fit (the report names the largest buffers), 2 bad input
(unknown topology, libtpu missing, a batch that does not divide over the slice).
"""

import json
import re
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np

from hat_ebm_jax import cli, sharding
from hat_ebm_jax.plan import hlo as hlo_lib
from hat_ebm_jax.plan import programs, topology

def _cost(compiled) -> Dict[str, float]:
  return hlo_lib.cost_dict(compiled.cost_analysis())


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
  s = topology.parse_slice(slice_name)
  devices = topology.slice_devices(s)
  sharding.configure_jax()
  mesh = sharding.create_mesh(devices)
  if what not in ('train', 'eval'):
    raise topology.PlanError(f"--what must be 'train' or 'eval'; got {what!r}.")
  build = programs.train_programs if what == 'train' else programs.eval_programs
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

  # The loop as placed inside the step (its trip count from the HLO): on v4, for
  # example, the kernels can stay in CMEM across the sampler's steps.
  spaces = dict(sorted(hlo_lib.memory_space_traffic(hlo, progs.loop_bodies).items()))
  coll = hlo_lib.collectives(hlo, progs.loop_bodies)
  summary = hlo_lib.collective_summary(coll)
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
      # By the HLO's shapes and layouts, per device and step: HBM (space 0) and on-chip.
      bytes_accessed_per_device=bytes_accessed,
      traffic_by_memory_space={str(k): int(v) for k, v in spaces.items()},
      traffic_hbm=int(spaces.get(0, 0)),
      traffic_on_chip=int(sum(v for k, v in spaces.items() if k != 0)),
      # The best model FLOP utilisation the step can reach: its FLOP-bound time over the
      # estimate (1 when FLOP-bound; an HBM-bound step leaves the rest of the peak idle).
      mfu_bound=seconds_flops / est if est > 0 else 0.0,
      steps_per_run=progs.steps_per_run, hours_per_run=est * progs.steps_per_run / 3600,
      collectives=summary,
      collective_bytes_per_step=sum(v['bytes_per_step'] for v in summary.values()),
      collective_sources=hlo_lib.group_sources(coll),
      compile_seconds=compile_s, loop_body_compile_seconds=body_compile_s)
  if not fits:
    report['largest_arguments'] = _largest_arguments(progs.step_args)
    report['largest_buffers'] = hlo_lib.largest_buffers(hlo)
  return report


def _size(b: float) -> str:
  for unit, div in (('GiB', topology.GiB), ('MiB', 1024 ** 2), ('KiB', 1024)):
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
      ('step time roofline', f"{r['seconds_flop_bound']:.4f} s FLOP-bound (peak "
                                f"{r['peak_flops_per_device'] / 1e12:.0f} TFLOP/s bf16 "
                                f"per chip), {r['seconds_hbm_bound']:.4f} s HBM-bound"),
      ('cost model', 'n/a (no positive optimal_seconds)' if r['seconds_cost_model'] is None
       else f"{r['seconds_cost_model']:.4f} s"),
      ('est. seconds per step', f"{r['seconds_per_step']:.4f} (MFU at most "
                                f"{100 * r['mfu_bound']:.0f}%)"),
      ('hours per run', f"{r['hours_per_run']:.2f} ({r['steps_per_run']} steps)"),
      ('traffic per step per device', f"HBM {_size(r['traffic_hbm'])}, on-chip "
                                      f"{_size(r['traffic_on_chip'])} (HLO shapes and "
                                      f"layouts; XLA's bytes accessed: "
                                      f"{_size(r['bytes_accessed_per_device'])})"),
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
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flag = config_flags.DEFINE_config_file('config', None, 'Experiment config.',
                                                lock_config=True)
  topology_flag = flags.DEFINE_string('topology', None, 'Cloud TPU accelerator type, e.g. '
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
      report = plan(config_flag.value, topology_flag.value, what.value,
                    int(hbm_gib.value * topology.GiB) if hbm_gib.value else None)
    print(format_report(report))
    print(json.dumps(report, default=float))
    return 0 if report['fits'] else 1

  try:
    cli.run(lambda a: sys.exit(run(a)), argv=argv)
  except SystemExit as e:
    return int(e.code or 0)
  return 0
