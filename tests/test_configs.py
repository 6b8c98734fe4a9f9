"""Every paper config carries exactly the values of docs/algorithm.md §8 (and, with
`:eval`, those of docs/algorithm.md §9); bad configs fail early; each experiment is one
file (`:eval` selects its evaluation)."""

import json
import os
import warnings

from absl import flags
from ml_collections import config_flags
import pytest

from hat_ebm_jax import config_lib
from tests.conftest import CONFIGS, load

COMMON = dict(data_epsilon=1e-3, energy_l2=0.0, nda_frac=0.0, init_scale_latent=1.0,
              init_scale_res=0.0, max_grad_norm=50.0, ebm_opt_decay=0.9999,
              gen_opt_decay=0.9999,
              log_freq=50, plot_freq=500, checkpoint_freq=1000, batch_size=128,
              persistent_size=10000, gen_loss_factor_coop=1000.0)

SYNTH = dict(mode='synthesis', mcmc_steps=50, epsilon=5e-4, mcmc_temp=1e-8,
             clip_langevin_grad_res=True, max_langevin_norm_res=2.5, gen_factor=2.0)

EXPECTED = {
    'cifar10_synth': dict(COMMON, **SYNTH, dataset='cifar10', image_size=32,
                          num_training_steps=50000, ebm_lr_info=[[1e-4, 0]],
                          gen_lr_info=[[1e-4, 0]], ebm_type='ebm_sngan32', ebm_ngf=256,
                          gen_type='gen_sngan32', gen_ngf=256, clip_ebm_grad=False),
    'celeba64_synth': dict(COMMON, **SYNTH, dataset='celeb_a', image_size=64,
                           num_training_steps=50000, ebm_lr_info=[[1e-4, 0]],
                           gen_lr_info=[[1e-4, 0]], ebm_type='ebm_sngan64',
                           gen_type='gen_sngan64', clip_ebm_grad=False),
    'imagenet128': dict(COMMON, **SYNTH, dataset='imagenet2012', image_size=128,
                        random_crop=True, num_training_steps=300000,
                        ebm_lr_info=[[1e-4, 0], [1e-5, 230000], [1e-6, 260000]],
                        gen_lr_info=[[5e-5, 0], [1e-5, 230000], [1e-6, 260000]],
                        clip_ebm_grad=True, ebm_type='ebm_sngan128', ebm_ngf=1024,
                        gen_type='gen_sngan128', gen_ngf=1024),
    'imagenet128_large': dict(COMMON, **SYNTH, dataset='imagenet2012', image_size=128,
                              random_crop=True, num_training_steps=300000,
                              ebm_lr_info=[[1e-4, 0], [1e-5, 230000], [1e-6, 260000]],
                              gen_lr_info=[[5e-5, 0], [1e-5, 230000], [1e-6, 260000]],
                              clip_ebm_grad=True, ebm_ngf=2048, gen_ngf=2048),
    'cifar10_refine': dict(COMMON, mode='joint', dataset='cifar10', image_size=32,
                           num_training_steps=25000, ebm_lr_info=[[1e-5, 0]],
                           gen_type='gen_sngan32', gen_factor=1.0, mcmc_steps=250,
                           epsilon=1e-4, epsilon_latent=5e-3, mcmc_temp=1e-3,
                           clip_langevin_grad_res=True, max_langevin_norm_res=2.5),
    'celeba64_refine': dict(COMMON, mode='joint', dataset='celeb_a', image_size=64,
                            num_training_steps=25000, ebm_lr_info=[[1e-5, 0]],
                            gen_type='gen_sngan64', gen_factor=1.0, mcmc_steps=100,
                            epsilon=1e-4, epsilon_latent=5e-3, mcmc_temp=1e-6,
                            clip_langevin_grad_res=True, max_langevin_norm_res=2.5),
    'cifar10_retrofit': dict({**COMMON, 'data_epsilon': 1e-2}, mode='joint',
                             dataset='cifar10', image_size=32, num_training_steps=25000,
                             ebm_lr_info=[[1e-4, 0]], gen_type='gen_decoder32',
                             gen_factor=2.0, mcmc_steps=100, epsilon=5e-4,
                             epsilon_latent=1e-3, mcmc_temp=1e-3, tau_res=50.0),
    'cifar10_ae': dict(mode='autoencoder', dataset='cifar10', image_size=32,
                       gen_type='gen_decoder32', inf_type='inf_encoder32',
                       gen_lr_info=[[1e-4, 0]], inf_lr_info=[[1e-4, 0]],
                       loss_factor=1000.0, data_epsilon=0.02, num_epochs=100,
                       steps_per_epoch=499, test_steps=99, batch_size=128,
                       num_training_steps=49900, gen_factor=2.0),
}


def plain(value):
  """`value` as config.json holds it (tuples as lists)."""
  return json.loads(json.dumps(value))


@pytest.mark.parametrize('name', sorted(EXPECTED))
def test_paper_config_has_the_values_of_the_paper(name):
  c = load(name)
  for key, want in EXPECTED[name].items():
    got = plain(c[key])
    assert got == pytest.approx(want) if isinstance(want, float) else got == want, (
        f'{name}.{key} = {c[key]!r}, expected {want!r}')


def test_learning_rate_schedules_can_be_given_on_the_command_line(monkeypatch):
  """`*_lr_info` are tuples, which ml_collections' override flags parse (a list is not)."""
  argv = ['main', '--config=' + os.path.join(CONFIGS, 'digits.py'),
          '--config.ebm_lr_info=((2e-4, 0), (2e-5, 1000))', '--config.gen_lr_info=((3e-4, 0),)']
  monkeypatch.setattr('sys.argv', argv)  # where ml_collections finds the overrides
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', flag_values=fv)
  fv(argv)
  c = fv.config
  assert plain(c.ebm_lr_info) == [[2e-4, 0], [2e-5, 1000]]
  assert plain(c.gen_lr_info) == [[3e-4, 0]]
  config_lib.validate(c)


# docs/algorithm.md §9: the evaluation sampler of each experiment (`configs/<name>.py:eval`).
PROTOCOL = dict(mode='evaluate', clip_langevin_grad_res=False, num_eval_samples=49920,
                eval_batch_size=96)
EXPECTED_EVAL = {
    'cifar10_synth': dict(PROTOCOL, eval_model_mode='synthesis', mcmc_steps=125,
                          epsilon=5e-4, mcmc_temp=1e-3, tau_res=0.0, init_scale_res=0.01),
    'celeba64_synth': dict(PROTOCOL, eval_model_mode='synthesis', mcmc_steps=100,
                           epsilon=5e-4, mcmc_temp=1e-8, tau_res=0.0, init_scale_res=0.01),
    'imagenet128': dict(PROTOCOL, eval_model_mode='synthesis', mcmc_steps=150,
                        epsilon=5e-4, mcmc_temp=1e-8, tau_res=0.0, init_scale_res=0.01),
    'imagenet128_large': dict(PROTOCOL, eval_model_mode='synthesis', mcmc_steps=125,
                              epsilon=5e-4, mcmc_temp=1e-8, tau_res=0.0,
                              init_scale_res=0.01, ebm_ngf=2048, gen_ngf=2048),
    'cifar10_refine': dict(PROTOCOL, eval_model_mode='joint', mcmc_steps=350, epsilon=1e-4,
                           epsilon_latent=5e-3, mcmc_temp=1e-3, tau_res=8.0,
                           init_scale_res=0.0),
    'celeba64_refine': dict(PROTOCOL, eval_model_mode='joint', mcmc_steps=125,
                            epsilon=1e-4, epsilon_latent=5e-3, mcmc_temp=1e-6,
                            tau_res=0.0, init_scale_res=0.0),
    'cifar10_retrofit': dict(PROTOCOL, eval_model_mode='joint', mcmc_steps=125,
                             epsilon=5e-4, epsilon_latent=1e-3, mcmc_temp=1e-3,
                             tau_res=50.0, init_scale_res=0.01),
    'digits': dict(mode='evaluate', eval_model_mode='synthesis', mcmc_steps=20,
                   num_eval_samples=1024, eval_batch_size=128,
                   ood_datasets='noise,shuffled,inverted,constant,letters', ood_split='test',
                   num_ood_samples=1000, clip_langevin_grad_res=True),
}


@pytest.mark.parametrize('name', sorted(EXPECTED_EVAL))
def test_eval_form_has_the_evaluation_values_and_the_training_nets(name):
  c, trained = load(name, 'eval'), load(name)
  for key, want in EXPECTED_EVAL[name].items():
    assert c[key] == pytest.approx(want) if isinstance(want, float) else c[key] == want, (
        f'{name}:eval.{key} = {c[key]!r}, expected {want!r}')
  assert c.exp_name == f'eval_{trained.exp_name}'
  changed = {k for k in trained.keys() if c[k] != trained[k]}
  assert changed <= set(EXPECTED_EVAL[name]) | {'exp_name'}, changed
  assert load(name, '').to_dict() == trained.to_dict()


def test_one_file_per_experiment():
  """No `configs/eval_<experiment>.py`: the evaluation is `configs/<experiment>.py:eval`."""
  assert not [f for f in os.listdir(CONFIGS) if f.startswith('eval_')]


def test_an_unknown_config_argument_is_refused():
  with pytest.raises(ValueError, match="'evaluate'.*:eval"):
    load('cifar10_synth', 'evaluate')


@pytest.mark.parametrize('name', sorted(EXPECTED) + ['digits', 'tiny'])
def test_every_config_validates(name):
  c = load(name)
  if c.mode == 'joint':
    c.gen_weights = '/some/generator'
  config_lib.validate(c)


@pytest.mark.parametrize('name', sorted(EXPECTED_EVAL))
def test_every_eval_form_validates(name):
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # loading a config warns nothing
    c = load(name, 'eval')
  config_lib.validate(c)


def test_joint_configs_demand_pretrained_weights():
  with pytest.raises(ValueError, match='gen_weights'):
    config_lib.validate(load('cifar10_refine'))


@pytest.mark.parametrize('key,value,match', [
    ('mode', 'synth', 'Unknown mode'),
    ('dataset', 'mnist', 'Unknown dataset'),
    ('batch_size', 0, 'batch_size'),
    ('mcmc_temp', 0.0, 'mcmc_temp'),
    ('epsilon', -1.0, 'epsilon'),
    ('ebm_lr_info', [[1e-4, 10]], 'start at step 0'),
    ('ebm_type', 'ebm_resnet', 'not a known net'),
    ('dtype', 'float8', 'dtype'),
])
def test_impossible_values_are_rejected_before_compiling(key, value, match):
  c = load('tiny')
  with c.unlocked():
    c[key] = value
  with pytest.raises(ValueError, match=match):
    config_lib.validate(c)


def test_unknown_keys_are_rejected_with_the_key_named():
  c = load('tiny')
  with c.unlocked():
    c.mcmc_stpes = 10
  with pytest.raises(ValueError, match='mcmc_stpes'):
    config_lib.validate(c)
