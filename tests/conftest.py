"""Shared test setup: the session's XLA compilation cache, the conformance data of the
original TF code, and the helpers several test modules use.

Compilation cache: every test session compiles into one persistent cache folder
(`JAX_COMPILATION_CACHE_DIR`, a fresh temporary folder unless the caller set one), with
the minimum compile time and entry size lowered so that XLA:CPU programs are cached too.
The variables are set before jax is imported, in `os.environ`, so the subprocesses the
tests start (`python -m hat_ebm_jax.main`, the 8-device and 2-process runs) read and
fill the same cache: the same tiny programs compile once per session, not once per
process or per `train.run`. A run never depends on what an earlier session left there.

The conformance data (checkpoints, inputs/outputs and update steps written by running the
authors' TF2 code) ship with the tests, in `tests/data/tf_original` (its README.md says
what each file is). Tests that need them take the `ref_dir`, `manifest` or `ref_net`
fixtures; nothing outside the repository is read, and no test skips for missing data.
"""

import atexit
import functools
import json
import os
import pathlib
import shutil
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The `tpu` extra makes libtpu importable; without a TPU, jax would probe for one in every
# process (and print warnings on stderr, which the one-line-error tests read). The TPU
# plan's tests compile for TPU through `jax.experimental.topologies` all the same.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def _use_session_compilation_cache() -> None:
  """Points this process and its children at one XLA cache folder for the session."""
  if not os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    folder = tempfile.mkdtemp(prefix='hat_ebm_jax_xla_cache_')
    os.environ['JAX_COMPILATION_CACHE_DIR'] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
  # Cache every program: the defaults skip those compiled in under 1 s (most of ours).
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')


_use_session_compilation_cache()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import pytest

from hat_ebm_jax import config_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

# In case jax was imported before this file (a plugin): its flags read the environment
# at import only.
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs',
                  float(os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS']))
jax.config.update('jax_persistent_cache_min_entry_size_bytes',
                  int(os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES']))

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = os.path.join(REPO, 'configs')
REF = REPO / 'tests' / 'data' / 'tf_original'

# Generator output factor the reference checkpoints were written with (README table).
REF_OUT_FACTOR = {'gen_sngan32': 2.0, 'gen_sngan64': 1.0, 'gen_sngan128': 1.0,
                  'gen_decoder32': 2.0}


# ------------------------------------------------------------------ the slow tier's order

# The slow tier's files that take minutes, heaviest first (measured on 2 cores). The slow
# tier (`-m slow`) runs over setup.cfg's two workers, a file on one worker; xdist would
# start the files with the most tests first, so a heavy file could start last and leave
# one worker idle while the other finishes it. These start first, in this order.
SLOW_FIRST = ('test_plan.py', 'test_evaluate.py', 'test_scaling.py', 'test_kill.py',
              'test_benchmarks.py', 'test_readme.py')


def _slow_tier(config) -> bool:
  return config.getoption('markexpr', '') == 'slow'


def pytest_configure(config):
  if _slow_tier(config) and hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False  # keep the order below


def pytest_collection_modifyitems(config, items):
  if _slow_tier(config):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


# ------------------------------------------------------------------ configs


def load(name, *args):
  """`configs/<name>.py`'s `get_config(*args)`, as `--config=configs/<name>.py` loads it."""
  return config_lib.load_config_file(os.path.join(CONFIGS, name + '.py'), *args)


def with_overrides(c, **overrides):
  """`c` with `overrides` set (new keys allowed); returns `c`."""
  with c.unlocked():
    for k, v in overrides.items():
      c[k] = v
  return c


def tiny(mode='synthesis', **overrides):
  """`configs/tiny.py:<mode>` with `overrides`."""
  return with_overrides(load('tiny', mode), **overrides)


def ebm_step(**overrides):
  """One EBM update (`mode.ebm_update`) of the tiny synthesis config with `overrides`, on
  fixed uniform data and samples `[B, 16, 16, 1]`. -> ((params, opt_state, ema, metrics),
  config)."""
  from hat_ebm_jax import modes  # pylint: disable=g-import-not-at-top
  c = tiny('synthesis', **overrides)
  mode = modes.create(c)
  state = mode.init_state(jax.random.PRNGKey(0))
  shape = (c.batch_size, 16, 16, 1)
  data = jax.random.uniform(jax.random.PRNGKey(1), shape, minval=-1.0, maxval=1.0)
  samples = jax.random.uniform(jax.random.PRNGKey(2), shape, minval=-1.0, maxval=1.0)
  return jax.jit(mode.ebm_update)(state, data, samples, jax.random.PRNGKey(3)), c


# ------------------------------------------------------------------ files and trees


def snapshot(path):
  """(relative path, size, mtime) of every file under `path`: equal before and after
  means nothing was written, removed or touched."""
  path = pathlib.Path(path)
  return sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                for p in path.rglob('*') if p.is_file())


def max_rel_diff(a, b):
  """max |a - b| / max |b| over the whole tree."""
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb) and la
  la, lb = [np.asarray(x, np.float64) for x in la], [np.asarray(y, np.float64) for y in lb]
  num = max(float(np.max(np.abs(x - y))) for x, y in zip(la, lb))
  return num / (max(float(np.max(np.abs(y))) for y in lb) + 1e-12)


def max_rel_diff_per_tensor(a, b):
  """max over tensors of max |a - b| / max |b| (tensor by tensor)."""
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  return max(max_rel_diff(x, y) for x, y in zip(la, lb))


# ------------------------------------------------------------------ conformance data


@pytest.fixture(scope='session')
def ref_dir() -> pathlib.Path:
  """The conformance folder, `tests/data/tf_original`."""
  assert (REF / 'manifest.json').is_file(), f'conformance data missing from {REF}'
  return REF


@pytest.fixture(scope='session')
def manifest(ref_dir) -> dict:
  """`manifest.json` of the conformance data."""
  with open(ref_dir / 'manifest.json') as f:
    return json.load(f)


@functools.lru_cache(maxsize=None)
def _load_ref_net(name: str, ckpt_dir: str, conv_algorithm: str):
  from hat_ebm_jax import convert  # pylint: disable=g-import-not-at-top
  kwargs = {'out_factor': REF_OUT_FACTOR[name]} if name in REF_OUT_FACTOR else {}
  return convert.from_tf_checkpoint(str(REF / ckpt_dir / 'ckpt'), name,
                                    conv_algorithm=conv_algorithm, **kwargs)


@pytest.fixture(scope='session')
def ref_net(ref_dir):
  """`ref_net(name, ckpt_dir=None, conv_algorithm='auto') -> (module, variables)`: a
  reference checkpoint imported with `convert.from_tf_checkpoint` (with the README's
  out_factor), cached per session. The reference nets are narrow (at most 32 channels),
  so 'auto' runs them with direct convs; 'winograd' forces Winograd F(4x4, 3x3) on every
  3x3 conv whose maps are multiples of 4."""
  del ref_dir

  def load_net(name: str, ckpt_dir: str = None, conv_algorithm: str = 'auto'):
    return _load_ref_net(name, ckpt_dir or name, conv_algorithm)

  return load_net


# Damage done to a run checkpoint `WORKDIR/checkpoints/<step>` (tests/test_faults.py,
# tests/test_kill.py).
def step_dir(workdir, step):
  return pathlib.Path(workdir) / 'checkpoints' / str(step)


def largest_array_file(workdir, step):
  """The biggest data file of a step: the zstd-compressed chunk holding `params/w`."""
  files = [p for p in (step_dir(workdir, step) / 'default').glob('ocdbt.process_0/d/*')]
  return max(files, key=lambda p: p.stat().st_size)


def flip_byte(path, where=0.5):
  data = bytearray(path.read_bytes())
  data[int(len(data) * where)] ^= 0x01
  path.write_bytes(bytes(data))


def truncate(path):
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])


def remove_commit_marker(workdir, step):
  for name in (_commit_marker(), '_CHECKPOINT_METADATA'):
    (step_dir(workdir, step) / name).unlink()




def _commit_marker() -> str:
  from hat_ebm_jax import checkpointing  # pylint: disable=g-import-not-at-top
  return checkpointing.COMMIT_MARKER
