"""Import of the original TF checkpoints (docs/algorithm.md §2) against the conformance data.

Each reference net is read with `convert.from_tf_checkpoint` and run on the input stored
next to its checkpoint; its output must be the original's. (The CLI and the writing of
pretrained-weight folders are tested with the checkpointing module.)
"""

import jax
import numpy as np
import pytest

from hat_ebm_jax import convert

NETS = ('ebm_sngan32', 'ebm_sngan64', 'ebm_sngan128', 'gen_sngan32', 'gen_sngan64',
        'gen_sngan128', 'gen_decoder32', 'inf_encoder32')
OUTPUT_RTOL = 1e-4  # max |ours - original| / max |original|


def _slow_if_large(name, conv_algorithm):
  # Winograd on the 64/128 px nets runs the same `Conv3x3` code as on the 32 px ones,
  # which the quick tier checks.
  large = conv_algorithm == 'winograd' and not name.endswith('32')
  return pytest.param(name, conv_algorithm, marks=[pytest.mark.slow] if large else [])


@pytest.mark.parametrize('name,conv_algorithm', [
    _slow_if_large(n, a) for a in ('auto', 'winograd') for n in NETS])
def test_imported_net_reproduces_original_output(name, conv_algorithm, ref_net, ref_dir):
  """Output on `io.npz['input']` equals the original's `io.npz['output']` to 1e-4 relative
  (generators with the README's out_factor: 2 for gen_sngan32 and gen_decoder32), with
  direct convolutions and with Winograd F(4x4, 3x3) ones."""
  module, variables = ref_net(name, conv_algorithm=conv_algorithm)
  io = np.load(ref_dir / name / 'io.npz')
  out = np.asarray(jax.jit(module.apply)(variables, io['input']))
  assert out.shape == io['output'].shape
  rel = np.abs(out - io['output']).max() / np.abs(io['output']).max()
  print(f'\n[conformance] convert {name} ({conv_algorithm}): output rel err {rel:.3g}')
  assert rel <= OUTPUT_RTOL


@pytest.mark.parametrize('name', NETS)
def test_imported_variables_have_manifest_parameter_count(name, ref_net, manifest):
  """All trainable variables of the checkpoint land in `params` (BN moving statistics in
  `batch_stats`): the count is the manifest's."""
  _, variables = ref_net(name)
  n = sum(np.size(v) for v in jax.tree_util.tree_leaves(variables['params']))
  assert n == manifest[name]['num_params']
  n_stats = sum(np.size(v) for v in jax.tree_util.tree_leaves(
      variables.get('batch_stats', {})))
  n_ckpt_stats = sum(int(np.prod(shape)) for key, shape in
                     manifest[name]['checkpoint_keys'] if '/moving_' in key)
  assert n_stats == n_ckpt_stats


def test_widths_are_read_off_the_checkpoint(ref_net):
  """Without width arguments the net is built at the checkpoint's widths."""
  ebm, _ = ref_net('ebm_sngan64')
  gen, _ = ref_net('gen_sngan32')
  assert tuple(ebm.widths) == (4, 8, 16, 32, 64)
  assert (gen.ngf, gen.nz) == (32, 128)


def test_batch_norm_parameters_are_renamed_to_flax(ref_net):
  """Keras gamma/beta become Flax scale/bias; moving_mean/variance become mean/var."""
  _, variables = ref_net('gen_sngan32')
  assert set(variables['params']['bn_5']) == {'scale', 'bias'}
  assert set(variables['batch_stats']['bn_5']) == {'mean', 'var'}


@pytest.mark.parametrize('ckpt_dir,name,kwargs,listed', [
    ('ebm_sngan64', 'ebm_sngan32', {}, 'expected shape'),
    ('gen_sngan32', 'gen_sngan32', {'ngf': 16},
     'expected shape (16,), checkpoint has (32,)'),
    ('gen_sngan64', 'gen_sngan32', {}, 'expected shape'),
    ('ebm_sngan32', 'gen_sngan32', {}, 'missing'),
    ('gen_sngan32', 'gen_decoder32', {}, 'missing batch_stats/block1/bn_2/mean'),
])
def test_checkpoint_of_another_net_raises_listing_mismatches(ckpt_dir, name, kwargs, listed,
                                                             ref_dir):
  """A checkpoint that does not fit the net (other net, or wrong explicit width) raises
  ValueError that counts and lists the mismatching variables."""
  with pytest.raises(ValueError, match='mismatches') as info:
    convert.from_tf_checkpoint(str(ref_dir / ckpt_dir / 'ckpt'), name, **kwargs)
  assert listed in str(info.value)


def test_missing_checkpoint_prefix_raises_file_not_found(tmp_path):
  """A prefix with no checkpoint behind it raises FileNotFoundError that names the prefix
  and says what a prefix is."""
  prefix = str(tmp_path / 'no_such_net' / 'ckpt')
  with pytest.raises(FileNotFoundError, match='prefix') as info:
    convert.from_tf_checkpoint(prefix, 'ebm_sngan32')
  assert prefix in str(info.value)
  assert 'ckpt.index' in str(info.value)


def test_unknown_tf_variable_raises():
  """A TF variable whose leaf is not a kernel/bias/BN variable is rejected by name."""
  with pytest.raises(ValueError, match='block2/conv_1/weird'):
    convert.tf_to_flax({'block2/conv_1/weird': np.zeros(3)})


def test_tf_to_flax_maps_names_one_to_one():
  """TF names map onto the Flax tree path by path."""
  tree = convert.tf_to_flax({
      'block2/conv_1/kernel': np.ones((3, 3, 2, 4)),
      'block2/bn_1/gamma': np.ones(2), 'block2/bn_1/beta': np.zeros(2),
      'block2/bn_1/moving_mean': np.zeros(2), 'block2/bn_1/moving_variance': np.ones(2)})
  assert tree['params']['block2']['conv_1']['kernel'].shape == (3, 3, 2, 4)
  assert tree['params']['block2']['conv_1']['kernel'].dtype == np.float32
  assert set(tree['params']['block2']['bn_1']) == {'scale', 'bias'}
  assert set(tree['batch_stats']['block2']['bn_1']) == {'mean', 'var'}
