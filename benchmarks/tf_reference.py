"""Speed of the original Hat EBM Langevin sampler in TensorFlow 2 / Keras, as JSON lines.

    python -m benchmarks.tf_reference                       # paper nets, batch 16
    python -m benchmarks.tf_reference --smoke               # tiny nets, a quick check

What it measures and why: the authors' TF2 code is said to take 0.29 s per synthesis
Langevin step and 0.66 s per joint step at batch 16 with the 32 px paper nets
(`ebm_sngan32` / `gen_sngan32`, ngf 256), on an unknown machine. To compare the JAX port
with TensorFlow on *this* machine, this script rebuilds the two 32 px nets in Keras
(docs/algorithm.md §2, random glorot-uniform weights: only the speed matters here) and times the
sampler of docs/algorithm.md §3 the way the original runs it: one `tf.function` around the whole
sampler, networks called with `training=False`, gradients from `tf.GradientTape`.

* `synthesis`: residual-only Langevin; by default `G(z)` is computed once, before the loop
  (what the JAX port does). `--synthesis_gen=per_step` recomputes `G(z)` inside every step
  as the authors' `langevin_update` does (its residual tape always calls `gen`).
* `joint`: sequential steps, as the authors' code: a latent step (gradient of
  `sum H(G(z) + y) / T` through `H` and `G` w.r.t. `z`), then a residual step at the new
  `z` (a second `G` forward). Per step: two `G` forwards, one `G` backward, two `H`
  gradients.

Both compute `images_init = G(z) + y` first and `images = G(z) + y` and the two gradient
norm diagnostics at the end, like the original. Per-sample clipping of the residual
gradient (`tf.clip_by_norm` over H, W, C) and noise are on. `--loop=python` (default)
unrolls the steps as a Python loop inside the `tf.function`; `--loop=while` runs them in a
`tf.while_loop`, which is what AutoGraph makes of the authors' `for _ in tf.range(...)`;
`--loop=both` prints a line for each.

Each sampler is run once to trace and warm up (`first_call_s`), then `--repeats` times;
`s_per_step` is the median run's wall time over `--steps`, `cpu_s_per_step` its process
CPU time (all threads) per step. The lines also record the TensorFlow and Keras versions,
whether oneDNN custom ops are on (the effective state, and `TF_ENABLE_ONEDNN_OPTS` as
set: set it in the environment, it is read when TensorFlow loads; TF turns oneDNN on by
default only on CPUs with AVX512-VNNI/BF16 or AMX), the thread pools, the CPU model and
the 1-minute load average (wall time is noisy on a shared machine).
"""

import argparse
import json
import math
import os
import platform
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

os.environ['KERAS_BACKEND'] = 'tensorflow'
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import benchmarks  # pylint: disable=g-import-not-at-top,wrong-import-position
from hat_ebm_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

NZ = 128
IMAGE_SHAPE = (32, 32, 3)
# Sampler settings of the paper configs (values do not change the cost of a step).
SYNTHESIS = dict(mcmc_temp=1e-8, epsilon=5e-4, max_langevin_norm_res=2.5,
                 use_noise=True, out_factor=2.0)                     # cifar10_synth
JOINT = dict(mcmc_temp=1e-3, epsilon=1e-4, epsilon_latent=5e-3, tau_res=0.0,
             max_langevin_norm_res=2.5, use_noise=True)            # cifar10_refine
LINE_KEYS = ('bench', 'sampler', 's_per_step', 'cpu_s_per_step', 'batch_size', 'ngf',
             'steps', 'tf_version', 'load_avg_1min', 'loop', 'onednn')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--ngf', type=int, default=256, help='width of both nets (paper: 256)')
  p.add_argument('--batch_size', type=int, default=16)
  p.add_argument('--steps', type=int, default=10, help='Langevin steps per timed run')
  p.add_argument('--repeats', type=int, default=3, help='timed runs (after one warm-up)')
  p.add_argument('--samplers', default='synthesis,joint',
                 help="comma list of 'synthesis', 'joint'")
  p.add_argument('--loop', default='python', choices=('python', 'while', 'both'),
                 help="'python': steps unrolled in the tf.function; 'while': "
                 "tf.while_loop (the authors' `for _ in tf.range`); 'both'")
  p.add_argument('--synthesis_gen', default='once', choices=('once', 'per_step'),
                 help="synthesis: G(z) once before the loop, or in every step (authors)")
  p.add_argument('--intra_op_threads', type=int, default=0,
                 help='TF intra-op thread pool size (0: TF default, all cores)')
  p.add_argument('--inter_op_threads', type=int, default=0,
                 help='TF inter-op thread pool size (0: TF default)')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='also append the JSON lines to this file')
  p.add_argument('--smoke', action='store_true',
                 help='ngf 8, batch 2, 2 steps, 1 repeat, both loops; checks the lines')
  args = p.parse_args(argv)
  if args.smoke:
    args.ngf, args.batch_size, args.steps, args.repeats = 8, 2, 2, 1
    args.loop = 'both'
  return args


# --- networks (docs/algorithm.md §2) -------------------------------------------------------------
# Layer names are those of the original checkpoints, so `load_checkpoint` can read them.

def _conv(filters: int, size: int, name: str) -> keras.layers.Conv2D:
  return keras.layers.Conv2D(filters, size, padding='same' if size > 1 else 'valid',
                             name=name)


class EBMBlock(keras.layers.Layer):
  """`h = [pool] conv3(relu(conv3([relu] x)))`; shortcut `x [-> 1x1] [-> pool]`.

  `stem`: no first relu, and the shortcut pools before its 1x1 conv."""

  def __init__(self, cin: int, cout: int, down: bool, stem: bool = False, **kw):
    super().__init__(**kw)
    self.down, self.stem = down, stem
    self.conv_1 = _conv(cout, 3, 'conv_1')
    self.conv_2 = _conv(cout, 3, 'conv_2')
    self.sc = _conv(cout, 1, 'sc') if (cin != cout or down) else None
    self.pool = keras.layers.AveragePooling2D(2, name='pool') if down else None

  def call(self, x):
    h = x if self.stem else tf.nn.relu(x)
    h = self.conv_2(tf.nn.relu(self.conv_1(h)))
    if self.down:
      h = self.pool(h)
    s = x
    if self.stem and self.down:
      s = self.pool(s)
    if self.sc is not None:
      s = self.sc(s)
    if self.down and not self.stem:
      s = self.pool(s)
    return h + s


class EBM32(keras.Model):
  """stem(3->ngf, down), block(ngf, down), block(ngf), block(ngf), relu, GAP, dense(1)."""

  def __init__(self, ngf: int):
    super().__init__(name='ebm_sngan32')
    self.conv_1 = EBMBlock(IMAGE_SHAPE[-1], ngf, down=True, stem=True, name='conv_1')
    self.block2 = EBMBlock(ngf, ngf, down=True, name='block2')
    self.block3 = EBMBlock(ngf, ngf, down=False, name='block3')
    self.block4 = EBMBlock(ngf, ngf, down=False, name='block4')
    self.lin_5 = keras.layers.Dense(1, use_bias=False, name='lin_5')

  def call(self, x, training=False):
    del training  # no batch norm
    h = self.block4(self.block3(self.block2(self.conv_1(x))))
    return self.lin_5(tf.reduce_mean(tf.nn.relu(h), axis=[1, 2]))


class GenBlock(keras.layers.Layer):
  """`h = conv3(relu(BN2(conv3(up(relu(BN1(x)))))))`; shortcut `up(x) -> 1x1` (an
  up-block always has the 1x1 conv)."""

  def __init__(self, cout: int, **kw):
    super().__init__(**kw)
    self.bn_1 = keras.layers.BatchNormalization(name='bn_1')
    self.bn_2 = keras.layers.BatchNormalization(name='bn_2')
    self.up = keras.layers.UpSampling2D(2, interpolation='bilinear', name='up')
    self.conv_1 = _conv(cout, 3, 'conv_1')
    self.conv_2 = _conv(cout, 3, 'conv_2')
    self.sc = _conv(cout, 1, 'sc')

  def call(self, x, training=False):
    h = self.up(tf.nn.relu(self.bn_1(x, training=training)))
    h = tf.nn.relu(self.bn_2(self.conv_1(h), training=training))
    return self.conv_2(h) + self.sc(self.up(x))


class Gen32(keras.Model):
  """dense -> [B, ngf, 4, 4] -> NHWC, three up-blocks, BN, relu, conv3, f * tanh."""

  def __init__(self, ngf: int, out_factor: float, bottom: int = 4):
    super().__init__(name='gen_sngan32')
    self.ngf, self.bottom, self.out_factor = ngf, bottom, out_factor
    self.lin_1 = keras.layers.Dense(bottom * bottom * ngf, name='lin_1')
    self.block2 = GenBlock(ngf, name='block2')
    self.block3 = GenBlock(ngf, name='block3')
    self.block4 = GenBlock(ngf, name='block4')
    self.bn_5 = keras.layers.BatchNormalization(name='bn_5')
    self.conv_5 = _conv(IMAGE_SHAPE[-1], 3, 'conv_5')

  def call(self, z, training=False):
    h = tf.reshape(self.lin_1(z), (-1, self.ngf, self.bottom, self.bottom))
    h = tf.transpose(h, (0, 2, 3, 1))  # channels first, as the original, then NHWC
    for block in (self.block2, self.block3, self.block4):
      h = block(h, training=training)
    h = tf.nn.relu(self.bn_5(h, training=training))
    return self.out_factor * tf.tanh(self.conv_5(h))


def make_nets(ngf: int, seed: int) -> Tuple[EBM32, Gen32]:
  """Built (variables created) eagerly, random glorot-uniform weights."""
  keras.utils.set_random_seed(seed)
  ebm, gen = EBM32(ngf), Gen32(ngf, SYNTHESIS['out_factor'])
  ebm(tf.zeros((1,) + IMAGE_SHAPE))
  gen(tf.zeros((1, NZ)))
  return ebm, gen


def load_checkpoint(model: keras.Model, path: str) -> None:
  """Loads an original Keras checkpoint (`model.save_weights` of the authors' code) by
  variable path: `<model>/block2/conv_1/kernel` <- `block2/conv_1/kernel/...`."""
  reader = tf.train.load_checkpoint(path)
  for v in model.variables:
    key = v.path.split('/', 1)[1] + '/.ATTRIBUTES/VARIABLE_VALUE'
    v.assign(reader.get_tensor(key))


# --- the sampler (docs/algorithm.md §3) ----------------------------------------------------------

def _sum_energy(ebm, x, temp: float):
  return tf.reduce_sum(ebm(x, training=False)) / temp


def _norm_per_sample(g):
  return tf.norm(tf.reshape(g, (tf.shape(g)[0], -1)), axis=1)


def residual_step(ebm, x_gen, y, s: Dict[str, float]):
  """y-step at fixed `G(z) = x_gen`: -> (y_new, (e^2/2) * mean ||clipped g_y||)."""
  with tf.GradientTape() as tape:
    tape.watch(y)
    energy = _sum_energy(ebm, x_gen + y, s['mcmc_temp'])
    if s.get('tau_res'):
      energy += s['tau_res'] * tf.reduce_sum(y ** 2)
  g = tape.gradient(energy, y)
  step = s['epsilon'] ** 2 / 2
  g = tf.clip_by_norm(g, s['max_langevin_norm_res'] / step, axes=[1, 2, 3])
  y = y - step * g
  if s['use_noise']:
    y += s['epsilon'] * tf.random.normal(tf.shape(y))
  return y, step * tf.reduce_mean(_norm_per_sample(g))


def latent_step(ebm, gen, z, y, s: Dict[str, float]):
  """z-step through G and H: -> (z_new, (e_z^2/2) * mean ||g_z||)."""
  with tf.GradientTape() as tape:
    tape.watch(z)
    energy = _sum_energy(ebm, gen(z, training=False) + y, s['mcmc_temp'])
  g = tape.gradient(energy, z)
  step = s['epsilon_latent'] ** 2 / 2
  z = z - step * g
  if s['use_noise']:
    z += s['epsilon_latent'] * tf.random.normal(tf.shape(z))
  return z, step * tf.reduce_mean(_norm_per_sample(g))


def _loop(step_fn, state, steps: int, loop: str):
  if loop == 'python':
    for _ in range(steps):
      state = step_fn(state)
    return state
  out = tf.while_loop(lambda i, *_: i < steps,
                      lambda i, *st: (i + 1,) + tuple(step_fn(st)),
                      (tf.constant(0),) + tuple(state))
  return out[1:]


def make_sampler(ebm, gen, kind: str, steps: int, loop: str, synthesis_gen: str = 'once',
                 settings: Optional[Dict[str, Any]] = None):
  """`run(z, y) -> (z, y, grad_norm_latent, grad_norm_res, images, images_init)`, a
  `tf.function`. `settings`: docs/algorithm.md §3 keys (default SYNTHESIS or JOINT)."""
  zero = tf.constant(0.0)

  @tf.function
  def synthesis(z, y):
    s = settings or SYNTHESIS
    x_gen = gen(z, training=False)
    images_init = x_gen + y

    def step(st):
      y, rec = st
      x = gen(z, training=False) if synthesis_gen == 'per_step' else x_gen
      y, r = residual_step(ebm, x, y, s)
      return y, rec + r

    y, rec = _loop(step, (y, zero), steps, loop)
    return z, y, zero, rec / steps, x_gen + y, images_init

  @tf.function
  def joint(z, y):
    s = settings or JOINT
    images_init = gen(z, training=False) + y

    def step(st):
      z, y, rec_z, rec_y = st
      z, r_z = latent_step(ebm, gen, z, y, s)
      y, r_y = residual_step(ebm, gen(z, training=False), y, s)
      return z, y, rec_z + r_z, rec_y + r_y

    z, y, rec_z, rec_y = _loop(step, (z, y, zero, zero), steps, loop)
    return z, y, rec_z / steps, rec_y / steps, gen(z, training=False) + y, images_init

  return {'synthesis': synthesis, 'joint': joint}[kind]


# --- timing -----------------------------------------------------------------------------

def onednn_enabled() -> Optional[bool]:
  """Whether TF's oneDNN custom ops are on in this process (None if TF cannot say)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return None


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment() -> Dict[str, Any]:
  return dict(tf_version=tf.__version__, keras_version=keras.__version__,
              onednn=onednn_enabled(), onednn_env=os.environ.get('TF_ENABLE_ONEDNN_OPTS'),
              intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
              inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
              cpu_count=os.cpu_count(), cpu_model=cpu_model())


def _run_once(run, z, y) -> Tuple[float, float, bool]:
  """(wall s, process CPU s, all outputs finite) of one sampler call, synchronised."""
  t, c = time.perf_counter(), time.process_time()
  outs = [o.numpy() for o in run(z, y)]
  wall, cpu = time.perf_counter() - t, time.process_time() - c
  return wall, cpu, all(bool(np.all(np.isfinite(o))) for o in outs)


def bench_sampler(nets, kind: str, loop: str, args) -> Dict[str, Any]:
  ebm, gen = nets
  run = make_sampler(ebm, gen, kind, args.steps, loop, args.synthesis_gen)
  z = tf.random.stateless_normal((args.batch_size, NZ), (args.seed, 1))
  y = tf.zeros((args.batch_size,) + IMAGE_SHAPE)
  load = os.getloadavg()[0]
  first, _, _ = _run_once(run, z, y)  # traces, optimises the graph, runs
  walls, cpus, finite = [], [], True
  for _ in range(args.repeats):
    wall, cpu, ok = _run_once(run, z, y)
    walls.append(wall)
    cpus.append(cpu)
    finite = finite and ok
  wall = statistics.median(walls)
  return dict(bench='tf_reference', sampler=kind, s_per_step=wall / args.steps,
              steps_per_s=args.steps / wall,
              cpu_s_per_step=statistics.median(cpus) / args.steps,
              s_per_step_runs=[round(w / args.steps, 5) for w in walls],
              first_call_s=first, batch_size=args.batch_size, ngf=args.ngf, nz=NZ,
              image_size=IMAGE_SHAPE[0], steps=args.steps, repeats=args.repeats,
              loop=loop, synthesis_gen=args.synthesis_gen if kind == 'synthesis' else None,
              finite=finite, load_avg_1min=round(load, 2),
              settings=SYNTHESIS if kind == 'synthesis' else JOINT, **environment())


def check_line(line: Dict[str, Any]) -> None:
  """Raises AssertionError unless `line` has the fields with sane values."""
  missing = [k for k in LINE_KEYS if k not in line]
  assert not missing, f'line lacks {missing}'
  json.loads(json.dumps(line))
  assert line['bench'] == 'tf_reference' and line['sampler'] in ('synthesis', 'joint')
  for k in ('s_per_step', 'cpu_s_per_step'):
    assert isinstance(line[k], float) and math.isfinite(line[k]) and line[k] > 0, (k, line)
  assert line['finite'], line


def run(args) -> List[Dict[str, Any]]:
  kinds = [k for k in args.samplers.split(',') if k]
  for k in kinds:
    if k not in ('synthesis', 'joint'):
      raise cli.user_error(ValueError(
          f"--samplers takes 'synthesis' and 'joint'; got {k!r}."))
  if args.intra_op_threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
  if args.inter_op_threads:
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
  nets = make_nets(args.ngf, args.seed)
  loops = ('python', 'while') if args.loop == 'both' else (args.loop,)
  emit = benchmarks.emitter(args.out)
  lines = [emit(bench_sampler(nets, k, loop, args)) for loop in loops for k in kinds]
  if args.smoke:
    for line in lines:
      check_line(line)
  return lines


def main(argv: Optional[List[str]] = None) -> None:
  run(parse_args(argv))


if __name__ == '__main__':
  cli.exit_on_user_error(main)
