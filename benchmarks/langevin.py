"""Speed of the Langevin sampler and of a training step, as JSON lines.

    python -m benchmarks.langevin --config=cifar10_synth --batch_size=16

For the networks of a paper config (`configs/<name>.py`, or a path) at a batch size it
prints one JSON object per line:

* `bench=sampler`, `sampler=synthesis` (residual only, `G(z)` fixed) and `sampler=joint`
  (latents and residual): `s_per_step`, `steps_per_s` (median of `--repeats` runs of
  `--sampler_steps` steps through `langevin_programs.sample`, what a user calling it on
  concrete arrays gets),
  `compile_s`, `flops_per_step` (model FLOPs: XLA's cost analysis of the step with direct
  convolutions), `flops_per_s`, `mfu` against `peak_flops`, `xla_flops_per_step` (cost
  analysis of the program as run: fewer where Winograd convs run), `peak_memory_bytes`;
* `bench=train_step`: the mode's `train_step` jitted as `train.py` does, on a random batch
  with a `--train_mcmc_steps` sampler: `steps_per_s`, `compile_s`, FLOPs, MFU, memory;
* `bench=compile`: trace + compile time of the `--compile_steps` samplers (50 and 250 by
  default) without running them, with the programs `langevin_programs.sample` would run.

Runs unchanged on CPU, GPU and TPU (one device). The peak FLOP/s behind `mfu` is taken
from the device kind (`peak_basis` says which) or `--peak_flops`. On CPU the lines also
carry the process CPU time per step and the 1-minute load average, since on a shared
machine wall time is noisy. XLA flags are never set here: pass them through `XLA_FLAGS`
(the lines record it).

`--smoke` runs tiny nets for 2-3 steps in well under a minute and checks every line.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from hat_ebm_jax import (cli, config_lib, langevin, langevin_programs, models, modes,
                         sharding, train)
from hat_ebm_jax.plan import hlo

import benchmarks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Dense peak FLOP/s per device: (bfloat16/float16, float32), by device-kind substring.
# TPUs run float32 matmuls as bfloat16 passes at jax's default precision: one figure.
_PEAKS = (
    ('h200', 989e12, 67e12), ('h100', 989e12, 67e12), ('a100', 312e12, 19.5e12),
    ('v100', 125e12, 15.7e12), ('l4', 121e12, 30.3e12),
    ('tpu v6', 918e12, 918e12), ('tpu7x', 2307e12, 2307e12),
    ('tpu v5p', 459e12, 459e12), ('tpu v5 lite', 197e12, 197e12),
    ('tpu v5e', 197e12, 197e12), ('tpu v4', 275e12, 275e12),
    ('tpu v3', 123e12, 123e12), ('tpu v2', 45e12, 45e12),
)
CPU_PEAK = 0.5e12  # this 2-core machine; pass --peak_flops elsewhere

SAMPLER_KEYS = ('bench', 'sampler', 'config', 'batch_size', 'steps', 's_per_step',
                'steps_per_s', 'compile_s', 'flops_per_step', 'flops_per_s', 'mfu',
                'xla_flops_per_step', 'peak_flops', 'peak_memory_bytes', 'backend',
                'device_kind', 'dtype', 'conv_algorithm', 'layout')
TRAIN_KEYS = ('bench', 'mode', 'config', 'batch_size', 'mcmc_steps', 's_per_step',
              'steps_per_s', 'compile_s', 'flops_per_step', 'flops_per_s', 'mfu',
              'xla_flops_per_step', 'peak_flops', 'peak_memory_bytes', 'backend',
              'device_kind', 'dtype', 'conv_algorithm')
COMPILE_KEYS = ('bench', 'sampler', 'config', 'batch_size', 'steps', 'compile_s',
                'layout', 'backend', 'device_kind')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', default='cifar10_synth',
                 help='configs/<name>.py, or a path to a config file')
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--samplers', default='synthesis,joint',
                 help="comma list of 'synthesis', 'joint' ('' for none)")
  p.add_argument('--sampler_steps', type=int, default=None,
                 help='steps of the timed samplers (default: config.mcmc_steps)')
  p.add_argument('--repeats', type=int, default=3, help='timed runs of each sampler')
  p.add_argument('--train_modes', default=None,
                 help="comma list of 'synthesis', 'joint' ('' for none; default: the "
                 "config's mode)")
  p.add_argument('--train_mcmc_steps', type=int, default=5,
                 help='Langevin steps inside the timed training step')
  p.add_argument('--train_steps', type=int, default=3, help='timed training steps')
  p.add_argument('--compile_steps', default='50,250',
                 help="sampler lengths to compile (no run) ('' for none)")
  p.add_argument('--compile_samplers', default='synthesis,joint',
                 help='samplers of the compile bench')
  p.add_argument('--dtype', default=None, help="network dtype (default: config's)")
  p.add_argument('--conv_algorithm', default=None,
                 help="3x3 convs: 'auto', 'direct' or 'winograd' (default: config's)")
  p.add_argument('--mcmc_unroll', default=None,
                 help="'auto', 'full' or steps per chunk (default: config's)")
  p.add_argument('--mcmc_update', default=None,
                 help="'sequential' or 'simultaneous' (default: config's)")
  p.add_argument('--sampler_call', default='direct', choices=('direct', 'jit'),
                 help="'direct': langevin_programs.sample on concrete arrays; "
                 "'jit': inside jax.jit, laid out as inside a training step")
  p.add_argument('--train_layout', default='auto', choices=('auto', 'jit'),
                 help="'auto': the training step train.py runs (on CPU, long samplers "
                 "run from the host); 'jit': always one jitted program")
  p.add_argument('--epsilon_latent', type=float, default=5e-3,
                 help="latent step of the joint sampler when the config's is 0")
  p.add_argument('--persistent_size', type=int, default=None,
                 help='synthesis bank size for the training step (default 4 batches; '
                 'the bank size does not change the cost of a step)')
  p.add_argument('--peak_flops', type=float, default=None,
                 help='peak FLOP/s of one device for MFU (default: by device kind; '
                 f'CPU {CPU_PEAK:.2g})')
  p.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                 help='set any other config key (repeatable), e.g. nda_frac=0.25')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='also append the JSON lines to this file')
  p.add_argument('--smoke', action='store_true',
                 help='tiny nets, 2-3 steps; checks the output lines')
  args = p.parse_args(argv)
  if args.smoke:
    args.batch_size = 4
    args.sampler_steps = 2
    args.repeats = 1
    args.train_mcmc_steps = 2
    args.train_steps = 1
    args.compile_steps = '3'
    args.compile_samplers = 'synthesis'
    # Chunks of one step: the host loop (and the scan inside the training step) with the
    # fewest programs to compile.
    args.mcmc_unroll = args.mcmc_unroll or '1'
  return args


# --- environment --------------------------------------------------------------------------

def device_info() -> Dict[str, Any]:
  d = jax.devices()[0]
  return dict(backend=jax.default_backend(), device_kind=d.device_kind,
              num_devices=jax.device_count(), jax_version=jax.__version__,
              xla_flags=os.environ.get('XLA_FLAGS', ''))


def peak_flops(dtype: str, override: Optional[float]) -> Tuple[Optional[float], str]:
  """(peak FLOP/s of one device, where the figure comes from)."""
  if override:
    return float(override), '--peak_flops'
  d = jax.devices()[0]
  if d.platform == 'cpu':
    return CPU_PEAK, 'CPU default for the 2-core development machine (--peak_flops)'
  kind = d.device_kind.lower()
  half = dtype in ('bfloat16', 'float16')
  for name, p_half, p_f32 in _PEAKS:
    if name in kind:
      return (p_half if half else p_f32), f'{name} {"bf16" if half else "fp32"} dense'
  return None, f'unknown device kind {d.device_kind!r}: pass --peak_flops'


def peak_memory_bytes() -> Optional[int]:
  """Peak memory so far: device peak on accelerators, process max RSS on CPU."""
  d = jax.devices()[0]
  if d.platform == 'cpu':
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == 'darwin' else rss * 1024)
  stats = d.memory_stats() or {}
  return stats.get('peak_bytes_in_use')


def _flops(cost) -> float:
  """`flops` of a cost analysis (`hlo.cost_dict` reads every jax version's form)."""
  return float(hlo.cost_dict(cost).get('flops', 0.0))


class CompileClock:
  """Seconds jax spends tracing, lowering and compiling (jax.monitoring events)."""

  def __init__(self):
    self.total = 0.0
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **kwargs):
    del kwargs
    if event.startswith('/jax/core/compile/'):
      self.total += duration


_CLOCK = None


def compile_clock() -> CompileClock:
  global _CLOCK
  if _CLOCK is None:
    _CLOCK = CompileClock()
  return _CLOCK


# --- config and nets ------------------------------------------------------------------------

def load_config(args):
  path = args.config
  if not os.path.exists(path):
    path = os.path.join(REPO, 'configs', f'{args.config}.py')
  if not os.path.isfile(path):
    raise cli.user_error(FileNotFoundError(
        f'No config {args.config!r}: neither a file nor {path}. Pass a config file or the '
        'name of one in configs/ (e.g. --config=cifar10_synth).'))
  config = config_lib.load_config_file(path)
  config.batch_size = args.batch_size
  if args.dtype:
    config.dtype = args.dtype
  if args.conv_algorithm:
    config.conv_algorithm = args.conv_algorithm
  if args.mcmc_unroll:
    config.mcmc_unroll = args.mcmc_unroll  # 'auto', 'full' or digits
  if args.mcmc_update:
    config.mcmc_update = args.mcmc_update
  for key, value in benchmarks.override_values(config, args.override).items():
    config[key] = value
  if args.smoke:
    config.ebm_ngf = config.gen_ngf = 8
    config.z_sz = 8
  return config


def make_nets(config, key):
  """(ebm, ebm variables, gen, gen variables) at random initial values."""
  c = config
  ebm = models.make_ebm(c)
  gen = models.make_generator(c)
  k1, k2 = jax.random.split(key)
  return (ebm, models.init_variables(ebm, k1, c.image_size), gen,
          models.init_variables(gen, k2, c.image_size))


def sampler_config(config, kind: str, steps: int, args) -> langevin.Settings:
  c = _with(config, mcmc_steps=steps, update_latents=kind == 'joint')
  if kind == 'joint' and not c.epsilon_latent:
    c.epsilon_latent = args.epsilon_latent
  return langevin.Settings.from_config(c)


def _common(config, args) -> Dict[str, Any]:
  out = dict(config=os.path.splitext(os.path.basename(args.config))[0],
             batch_size=args.batch_size, dtype=str(config.dtype),
             conv_algorithm=models.resolve_conv_algorithm(config.conv_algorithm),
             ebm=f'{config.ebm_type}/{config.ebm_ngf}',
             gen=f'{config.gen_type}/{config.gen_ngf}', image_size=config.image_size)
  if args.override:
    out['overrides'] = sorted(args.override)
  out.update(device_info())
  if out['backend'] == 'cpu':
    out['load_avg_1min'] = round(os.getloadavg()[0], 2)
  return out


def _unrolled_flops(e_fn, g_fn, z, y, key, scfg) -> float:
  """FLOPs of one sampler run, from XLA's cost analysis of the fully unrolled program
  (the same work in every layout; cost analysis counts a while loop's body once)."""
  (_, lowered, _), = langevin_programs.lower(e_fn, g_fn, z, y, key, scfg, unroll='full')
  return _flops(lowered.cost_analysis())


def runs_direct_convs(config) -> bool:
  """Whether the nets of `config` run direct convolutions only (then the program's FLOPs
  are the model's)."""
  return models.resolve_conv_algorithm(config.conv_algorithm) == 'direct'


def direct_conv_modules(config):
  """(ebm, gen) modules with direct convolutions (the same variables fit): the programs
  whose cost analysis gives the model FLOPs behind MFU."""
  c = _with(config, conv_algorithm='direct')
  return models.make_ebm(c), models.make_generator(c)


def _rates(flops: float, seconds: float, peak: Optional[float]):
  fps = flops / seconds if seconds > 0 else None
  return fps, (fps / peak if fps is not None and peak else None)


# --- benches --------------------------------------------------------------------------------

def bench_sampler(config, args, kind: str, nets) -> Dict[str, Any]:
  ebm, ev, gen, gv = nets
  steps = args.sampler_steps or int(config.mcmc_steps)
  scfg = sampler_config(config, kind, steps, args)
  key = jax.random.PRNGKey(args.seed)
  z = config.init_scale_latent * jax.random.normal(
      key, (args.batch_size,) + models.latent_shape(gen))
  y = jnp.zeros((args.batch_size,) + models.input_shape(ebm, config.image_size))
  e_fn, g_fn = langevin.nets(ebm, ev), langevin.nets(gen, gv)
  if args.sampler_call == 'jit':
    run = jax.jit(lambda e, g, z, y, k: langevin.sample(e, g, z, y, k, scfg))
    programs = [('jit', None, 1)]
  else:
    def run(e, g, z, y, k):
      return langevin_programs.sample(e, g, z, y, k, scfg)
    programs = langevin_programs.lower(e_fn, g_fn, z, y, key, scfg)
  xla_flops = flops = _unrolled_flops(e_fn, g_fn, z, y, key, scfg)
  if not runs_direct_convs(config):
    d_ebm, d_gen = direct_conv_modules(config)
    flops = _unrolled_flops(langevin.nets(d_ebm, ev), langevin.nets(d_gen, gv), z, y, key,
                            scfg)
  clock = compile_clock()
  before, t0 = clock.total, time.perf_counter()
  jax.block_until_ready(run(e_fn, g_fn, z, y, key))  # compiles
  first = time.perf_counter() - t0
  compile_s = clock.total - before
  walls, cpus = [], []
  for r in range(args.repeats):
    k = jax.random.fold_in(key, r + 1)
    t, c = time.perf_counter(), time.process_time()
    jax.block_until_ready(run(e_fn, g_fn, z, y, k))
    walls.append(time.perf_counter() - t)
    cpus.append(time.process_time() - c)
  if compile_s <= 0:  # no monitoring events (old jax): first call minus a run
    compile_s = max(first - statistics.median(walls), 0.0)
  wall = statistics.median(walls)
  peak, basis = peak_flops(str(config.dtype), args.peak_flops)
  fps, mfu = _rates(flops, wall, peak)
  out = dict(bench='sampler', sampler=kind, steps=steps,
             s_per_step=wall / steps, steps_per_s=steps / wall,
             s_per_step_runs=[round(w / steps, 5) for w in walls],
             compile_s=compile_s, flops_per_step=flops / steps, flops_per_s=fps, mfu=mfu,
             xla_flops_per_step=xla_flops / steps, peak_flops=peak, peak_basis=basis,
             peak_memory_bytes=peak_memory_bytes(),
             layout=[[n, c] for n, _, c in programs], sampler_call=args.sampler_call,
             mcmc_unroll=str(scfg.mcmc_unroll), mcmc_update=scfg.mcmc_update)
  if jax.default_backend() == 'cpu':
    out['cpu_s_per_step'] = statistics.median(cpus) / steps
  out.update(_common(config, args))
  return out


def bench_compile(config, args, kind: str, steps: int, nets) -> Dict[str, Any]:
  """Trace, lower and compile the programs of a `steps`-step sampler (nothing runs)."""
  jax.clear_caches()  # else programs compiled by an earlier bench are reused
  ebm, ev, gen, gv = nets
  scfg = sampler_config(config, kind, steps, args)
  key = jax.random.PRNGKey(args.seed)
  z = jnp.zeros((args.batch_size,) + models.latent_shape(gen))
  y = jnp.zeros((args.batch_size,) + models.input_shape(ebm, config.image_size))
  e_fn, g_fn = langevin.nets(ebm, ev), langevin.nets(gen, gv)
  t0 = time.perf_counter()
  if args.sampler_call == 'jit':
    programs = [('jit', jax.jit(lambda e, g, z, y, k: langevin.sample(
        e, g, z, y, k, scfg)).lower(e_fn, g_fn, z, y, key), 1)]
  else:
    programs = langevin_programs.lower(e_fn, g_fn, z, y, key, scfg)
  per_program = {}
  for name, low, _ in programs:
    t = time.perf_counter()
    low.compile()
    per_program[name] = round(time.perf_counter() - t, 3)
  out = dict(bench='compile', sampler=kind, steps=steps,
             compile_s=time.perf_counter() - t0, compile_s_per_program=per_program,
             layout=[[n, c] for n, _, c in programs], sampler_call=args.sampler_call,
             mcmc_unroll=str(scfg.mcmc_unroll), peak_memory_bytes=peak_memory_bytes())
  out.update(_common(config, args))
  return out


def _with(config, **changes):
  c = config.copy_and_resolve_references()
  for k, v in changes.items():
    setattr(c, k, v)
  return c


def bench_train(config, args, mode_name: str) -> Dict[str, Any]:
  c = config.copy_and_resolve_references()
  c.mode = mode_name
  c.mcmc_steps = args.train_mcmc_steps
  c.update_latents = None
  gen_v = None
  if mode_name == 'joint':  # a random generator in place of the pretrained one
    gen_v = models.init_variables(models.make_generator(c), jax.random.PRNGKey(1),
                                  c.image_size)
    if not c.epsilon_latent:
      c.epsilon_latent = args.epsilon_latent
  c.persistent_size = args.persistent_size or 4 * args.batch_size
  mode = modes.create(c, gen_variables=gen_v)
  state = mode.init_state(jax.random.PRNGKey(args.seed))
  shape = (args.batch_size,) + mode.data_shape()
  batch = jax.random.uniform(jax.random.PRNGKey(args.seed + 1), shape, jnp.float32, -1, 1)
  mesh = sharding.create_mesh(jax.devices()[:1])
  state_sh = sharding.state_shardings(state, mesh)
  batch_sh = sharding.batch_sharded(mesh)
  state = jax.device_put(state, state_sh)
  batch = jax.device_put(batch, batch_sh)
  host = args.train_layout == 'auto' and mode.host_phase is not None
  # FLOPs of the step as one unrolled program (the same work however it is laid out):
  # the model's (direct convolutions) and the program's as run.
  def unrolled_flops(**changes):
    unrolled = modes.create(_with(c, mcmc_unroll='full', **changes))
    return _flops(jax.jit(unrolled.train_step).lower(state, batch).cost_analysis())
  xla_flops = flops = unrolled_flops()
  if not runs_direct_convs(c):
    flops = unrolled_flops(conv_algorithm='direct')
  if args.train_layout == 'jit':
    step = jax.jit(mode.train_step, donate_argnums=(0,))
  else:
    step = train.make_train_step(mode, mesh, state_sh, batch_sh)  # what train.py runs
  clock = compile_clock()
  before, t0 = clock.total, time.perf_counter()
  state, metrics = step(state, batch)  # compiles
  jax.block_until_ready(metrics)
  first = time.perf_counter() - t0
  compile_s = clock.total - before
  walls, cpus = [], []
  for _ in range(args.train_steps):
    t, cpu = time.perf_counter(), time.process_time()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    walls.append(time.perf_counter() - t)
    cpus.append(time.process_time() - cpu)
  if compile_s <= 0:
    compile_s = max(first - statistics.median(walls), 0.0)
  wall = statistics.median(walls)
  peak, basis = peak_flops(str(c.dtype), args.peak_flops)
  fps, mfu = _rates(flops, wall, peak)
  out = dict(bench='train_step', mode=mode_name, mcmc_steps=int(c.mcmc_steps),
             s_per_step=wall, steps_per_s=1.0 / wall,
             s_per_step_runs=[round(w, 5) for w in walls], compile_s=compile_s,
             flops_per_step=flops, flops_per_s=fps, mfu=mfu, xla_flops_per_step=xla_flops,
             peak_flops=peak,
             peak_basis=basis, peak_memory_bytes=peak_memory_bytes(),
             persistent_size=mode.bank_size,
             finite=bool(np.asarray(metrics['finite'])),
             langevin_layout='host loop + jitted update' if host else 'one jitted program',
             mcmc_unroll=str(c.mcmc_unroll), mcmc_update=c.mcmc_update)
  if jax.default_backend() == 'cpu':
    out['cpu_s_per_step'] = statistics.median(cpus)
  out.update(_common(c, args))
  return out


# --- checks and main ------------------------------------------------------------------------

def check_line(line: Dict[str, Any]) -> None:
  """Raises AssertionError unless `line` has its bench's fields with sane values."""
  keys = {'sampler': SAMPLER_KEYS, 'train_step': TRAIN_KEYS,
          'compile': COMPILE_KEYS}[line['bench']]
  missing = [k for k in keys if k not in line]
  assert not missing, f'{line["bench"]} line lacks {missing}'
  json.loads(json.dumps(line))
  assert line['compile_s'] >= 0, line
  if line['bench'] in ('sampler', 'train_step'):
    for k in ('s_per_step', 'steps_per_s', 'flops_per_step', 'flops_per_s',
              'xla_flops_per_step'):
      assert isinstance(line[k], float) and np.isfinite(line[k]) and line[k] > 0, (k, line)
    assert abs(line['s_per_step'] * line['steps_per_s'] - 1) < 1e-6, line
    if line['peak_flops']:
      assert 0 < line['mfu'] == line['flops_per_s'] / line['peak_flops'], line
    assert line['peak_memory_bytes'] is None or line['peak_memory_bytes'] > 0, line
  if line['bench'] == 'train_step':
    assert line['finite'], line


def run(args) -> List[Dict[str, Any]]:
  config = load_config(args)
  emit = benchmarks.emitter(args.out)
  lines = []
  kinds = [k for k in args.samplers.split(',') if k]
  compile_steps = [int(s) for s in args.compile_steps.split(',') if s]
  train_modes = args.train_modes
  if train_modes is None:
    train_modes = config.mode if config.mode in ('synthesis', 'joint') else 'synthesis'
  train_modes = [m for m in train_modes.split(',') if m]
  compile_kinds = [k for k in args.compile_samplers.split(',') if k] if compile_steps else []
  for k in kinds + train_modes + compile_kinds:
    if k not in ('synthesis', 'joint'):
      raise cli.user_error(ValueError(
          f"samplers/train_modes take 'synthesis' and 'joint'; got {k!r}."))
  nets = make_nets(config, jax.random.PRNGKey(args.seed)) if (
      kinds or (compile_steps and compile_kinds)) else None
  for kind in kinds:
    lines.append(emit(bench_sampler(config, args, kind, nets)))
  for mode_name in train_modes:
    lines.append(emit(bench_train(config, args, mode_name)))
  for steps in compile_steps:
    for kind in compile_kinds:
      lines.append(emit(bench_compile(config, args, kind, steps, nets)))
  if args.smoke:
    for line in lines:
      check_line(line)
    assert {l['bench'] for l in lines} == {'sampler', 'train_step', 'compile'}, lines
  return lines


def main(argv: Optional[List[str]] = None) -> None:
  run(parse_args(argv))


if __name__ == '__main__':
  cli.exit_on_user_error(main)
