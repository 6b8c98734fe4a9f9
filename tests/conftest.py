"""Shared test setup: where the conformance data of the original TF code lives.

The conformance data (checkpoints, inputs/outputs and update steps written by running the
authors' TF2 code, see SPEC.md) sit outside the repository, at
`<repo>/../shared/reference/tf_original`. Tests that need them take the `ref_dir`,
`manifest` or `ref_net` fixtures, which skip with a clear reason when the folder is absent;
every other test runs without it.
"""

import functools
import json
import os
import pathlib

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = pathlib.Path(__file__).resolve().parent.parent
REF = REPO.parent / 'shared' / 'reference' / 'tf_original'
SKIP_REASON = 'conformance data ../shared/reference/tf_original not found'

# Generator output factor the reference checkpoints were written with (README table).
REF_OUT_FACTOR = {'gen_sngan32': 2.0, 'gen_sngan64': 1.0, 'gen_sngan128': 1.0,
                  'gen_decoder32': 2.0}


def require_ref() -> pathlib.Path:
  """Returns REF, or skips the calling test if the conformance folder is absent."""
  if not REF.is_dir():
    pytest.skip(SKIP_REASON)
  return REF


@pytest.fixture(scope='session')
def ref_dir() -> pathlib.Path:
  """The conformance folder (skips when it is absent)."""
  return require_ref()


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

  def load(name: str, ckpt_dir: str = None, conv_algorithm: str = 'auto'):
    return _load_ref_net(name, ckpt_dir or name, conv_algorithm)

  return load
