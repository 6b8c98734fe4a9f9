"""The TPU plan (`python -m hat_ebm_jax.plan`): configs compile for Cloud TPU slices on
this CPU machine, with the device count a real slice exposes, TPU's own platform
choices, bank traffic that does not grow with the bank, and figures that add up.

These tests need libtpu (`pip install -e '.[tpu]'`, which CI installs). Without it they
fail with the pip command: compiling for TPU is what they check, so they never skip.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from hat_ebm_jax import config_lib, langevin_programs, modes, plan, sharding

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(**overrides):
  c = config_lib.load_config_file(os.path.join(REPO, 'configs', 'tiny.py'))
  for k, v in overrides.items():
    c[k] = v
  return c


def mesh_of(name):
  return sharding.create_mesh(plan.slice_devices(plan.parse_slice(name)))


# --- quick tier --------------------------------------------------------------------------------

@pytest.mark.parametrize('name, topology, devices, kind', [
    ('v4-8', 'v4:2x2x1', 4, 'TPU v4'),  # megacore: 4 chips, one device each
    ('v4-32', 'v4:2x2x4', 16, 'TPU v4'),
    ('v5p-8', 'v5:2x2x1', 4, 'TPU v5'),
    ('v5litepod-8', 'v5e:2x4', 8, 'TPU v5 lite'),
    ('v6e-8', 'v6e:2x4', 8, 'TPU v6 lite'),
])
def test_accelerator_types_give_the_devices_a_real_slice_exposes(name, topology,
                                                                  devices, kind):
  s = plan.parse_slice(name)
  assert (s.topology_name, s.devices) == (topology, devices)
  found = plan.slice_devices(s)
  assert len(found) == devices
  assert {d.device_kind for d in found} == {kind}
  assert len({tuple(d.coords) for d in found}) == devices  # one device per chip


def test_an_unknown_topology_lists_the_valid_names():
  with pytest.raises(plan.PlanError, match='Unknown TPU topology .v4-9.') as e:
    plan.parse_slice('v4-9')
  for name in ('v4-8', 'v4-32', 'v4-256', 'v5p-8', 'v5litepod-8', 'v6e-8'):
    assert name in str(e.value)
  assert '\n' not in str(e.value)


def test_without_libtpu_the_error_gives_the_pip_command(monkeypatch):
  monkeypatch.setitem(sys.modules, 'libtpu', None)  # `import libtpu` now fails
  with pytest.raises(plan.PlanError, match=r"pip install -e '\.\[tpu\]'"):
    plan.slice_devices(plan.parse_slice('v4-8'))


def test_a_batch_that_does_not_divide_over_the_slice_gets_trainings_message():
  mesh = mesh_of('v4-8')
  with pytest.raises(ValueError) as expected:
    sharding.check_batch_divides(6, mesh)
  with pytest.raises(ValueError) as e:
    plan.plan(tiny(batch_size=6, persistent_size=60), 'v4-8')
  assert str(e.value) == str(expected.value)
  assert 'does not divide over the 4 devices' in str(e.value)


def test_a_tpu_plan_on_a_cpu_host_gets_direct_convs_and_the_rolled_loop():
  c = tiny(mcmc_steps=12)  # longer than a CPU chunk: the host would run it from Python
  assert jax.default_backend() == 'cpu'
  host, tpu = modes.create(c), plan.build_mode(c, 'tpu')
  assert (host.ebm.conv_algorithm, host.gen.conv_algorithm) == ('winograd_large',) * 2
  assert (tpu.ebm.conv_algorithm, tpu.gen.conv_algorithm) == ('direct', 'direct')
  assert langevin_programs.runs_on_host(host.sampler, backend=host.platform)
  assert not langevin_programs.runs_on_host(tpu.sampler, backend=tpu.platform)
  # The training step is one program with the sampler as a rolled loop (one while).
  progs = plan.train_programs(c, mesh_of('v4-8'))
  text = progs.step.lower(*progs.step_args).as_text()
  assert text.count('stablehlo.while') == 1
  assert progs.loop_bodies == 12


ROW = (8, 8, 3)  # a small image: the compiles stay quick


def _bank_traffic(name, rows, batch=32):
  """Collective bytes per device of one bank read and write (`gather_rows`, `set_rows`)
  of `batch` random pairs from a bank of `rows` images, compiled for `name`."""
  mesh = mesh_of(name)
  shape = (rows,) + ROW
  bank = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding.batch_sharded(mesh))
  new = jax.ShapeDtypeStruct((batch,) + shape[1:], jnp.float32,
                             sharding=sharding.batch_sharded(mesh))
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))

  def step(bank, new, key):
    idx = jax.random.choice(key, rows, (batch,), replace=False)
    read = sharding.gather_rows(bank, idx)
    return sharding.set_rows(bank, idx, new + read), read

  fn = sharding.jit(step, mesh, donate_argnums=(0,))
  items = plan.collectives(fn.lower(bank, new, key).compile().as_text())
  return {k: v['bytes_per_step'] for k, v in plan.collective_summary(items).items()
          if v['ops']}


def test_bank_traffic_per_device_does_not_grow_with_the_bank_or_the_slice():
  row = 4 * 8 * 8 * 3
  small, large = _bank_traffic('v4-8', 256), _bank_traffic('v4-8', 4096)
  assert small == large
  assert set(small) == {'reduce-scatter', 'all-gather'}  # read, write
  assert sum(small.values()) <= 2.5 * 32 * row  # ~B rows read, B rows written
  assert sum(_bank_traffic('v4-32', 4096).values()) <= sum(small.values())


# --- slow tier: whole compiles (each compiled once per module) ---------------------------------

def _plan_cli(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]),
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'hat_ebm_jax.plan', *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope='module')
def tiny_cli():
  """The CLI on the tiny config (3 sampler steps, a rolled loop) with too little HBM."""
  return _plan_cli('--config=configs/tiny.py', '--topology=v4-8', '--hbm_gib=0.001')


@pytest.fixture(scope='module')
def cifar10_synth():
  """`cifar10_synth` at its paper widths and batch, 2 sampler steps, on v4-8:
  `(config, report)`. One compile serves every test below that reads it."""
  c = config_lib.load_config_file(os.path.join(REPO, 'configs', 'cifar10_synth.py'))
  c.mcmc_steps = 2
  return c, plan.plan(c, 'v4-8')


@pytest.mark.slow
def test_the_cli_reports_a_step_that_does_not_fit_with_its_largest_buffers(tiny_cli):
  p = tiny_cli
  assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
  table, last = p.stdout.rsplit('\n', 2)[0], p.stdout.strip().splitlines()[-1]
  assert 'DOES NOT FIT' in table and 'largest argument' in table
  r = json.loads(last)
  assert (r['devices'], r['mesh'], r['fits']) == (4, {'data': 4}, False)
  h = r['hbm_per_device']
  assert h['total'] == (h['arguments'] + h['temporaries'] + h['outputs'] - h['aliased']
                        + h['code'])
  assert r['flops_per_step'] == pytest.approx(4 * r['flops_per_step_per_device'])
  assert r['flops_per_step_per_device'] == pytest.approx(
      r['flops_compiled_step_per_device'] + 2 * r['flops_loop_body_per_device'])
  assert r['hours_per_run'] == pytest.approx(r['seconds_per_step'] * 6 / 3600)
  assert r['mfu_bound'] == pytest.approx(r['seconds_flop_bound'] / r['seconds_per_step'])
  assert 0 < r['mfu_bound'] <= 1
  assert r['rolled_loop'] and r['loop_bodies'] == 3
  # The traffic split by memory space: the HBM holds the arguments, so it is never empty.
  assert 'traffic per step per device' in table
  assert r['traffic_hbm'] > 0 and r['traffic_hbm'] + r['traffic_on_chip'] == sum(
      r['traffic_by_memory_space'].values())


@pytest.mark.slow
def test_flops_per_step_count_every_sampler_step(tiny_cli):
  rolled = json.loads(tiny_cli.stdout.strip().splitlines()[-1])
  body = rolled['flops_loop_body_per_device']
  # The loop body, compiled for one device's chains, is a sizeable part of the step:
  # leaving out one of the two extra bodies would miss by far more than the 2% below.
  assert body > 0.05 * rolled['flops_per_step_per_device']
  # The same 3 steps as straight-line code (no loop to undercount) agree within 2%.
  unrolled = plan.plan(tiny(mcmc_unroll='full'), 'v4-8')
  assert not unrolled['rolled_loop'] and unrolled['flops_loop_body_per_device'] == 0
  assert rolled['flops_per_step_per_device'] == pytest.approx(
      unrolled['flops_per_step_per_device'], rel=0.02)


def _pooled_kernels(ebm_params):
  """The 3x3 kernels `cifar10_synth`'s EBM runs as 4x4 stride-2 convs
  (`layers.PooledConv`: a down block's `conv_2`; the stem and `block2` pool)."""
  return [ebm_params[block]['conv_2']['kernel'] for block in ('conv_1', 'block2')]


@pytest.mark.slow
def test_cifar10_synthesis_fits_a_v4_8_with_one_gradient_all_reduce_per_update(
    cifar10_synth):
  c, r = cifar10_synth
  assert r['fits'] and r['devices'] == 4
  assert 0 < r['hbm_per_device']['total'] <= 32 * 2 ** 30
  assert r['rolled_loop'] and r['loop_bodies'] == 2
  assert r['flops_per_step_per_device'] == pytest.approx(
      r['flops_compiled_step_per_device'] + r['flops_loop_body_per_device'])
  # A Langevin step is one EBM input gradient on B/4 chains per device: about the
  # 42.6 GFLOP per 16 images that benchmarks/langevin measures on CPU (README).
  per_16 = r['flops_loop_body_per_device'] * 4 * 16 / 128
  assert 0.8 * 42.6e9 < per_16 < 1.2 * 42.6e9
  # Data parallelism: one all-reduce of the EBM and generator gradients per step (XLA
  # combines them into one tuple, with the metric scalars). Its bytes are the
  # parameters', except that XLA all-reduces each pooled conv's gradient as the 4x4
  # kernel it runs (`layers.pooled_kernel`), once per EBM branch (data and samples),
  # before the linear map back to 3x3 and the branches' sum (README). Everything else
  # is a few scalars: within 4 KiB.
  mode = plan.build_mode(c, 'tpu')
  state = jax.eval_shape(mode.init_state, jax.random.PRNGKey(0))
  nbytes = lambda tree: sum(x.size * x.dtype.itemsize
                            for x in jax.tree_util.tree_leaves(tree))
  grads = nbytes(state.params)
  pooled = _pooled_kernels(state.params['ebm'])
  expected = grads - nbytes(pooled) + 2 * 16 / 9 * nbytes(pooled)
  coll = r['collectives']
  assert coll['all-reduce']['bytes_per_step'] == pytest.approx(expected, abs=4096)
  assert 1.35 < expected / grads < 1.36  # the 1.36x
  bank_pair = 4 * (32 * 32 * 3 + 128)
  others = r['collective_bytes_per_step'] - coll['all-reduce']['bytes_per_step']
  assert others <= 2 * 128 * bank_pair


@pytest.mark.slow
def test_the_evaluation_sampler_plans_with_the_eval_configs_settings():
  c = config_lib.load_config_file(os.path.join(REPO, 'configs', 'digits.py'), 'eval')
  r = plan.plan(c, 'v4-8', what='eval')
  assert r['what'] == 'eval' and r['fits']
  assert r['batch'] == c.eval_batch_size and r['loop_bodies'] == c.mcmc_steps
  assert r['steps_per_run'] == c.num_eval_samples // c.eval_batch_size
  with pytest.raises(plan.PlanError, match='--what=eval'):
    plan.plan(c, 'v4-8', what='train')
