"""The base config every experiment starts from, and its validation.

Keys keep the original TF code's names where the meaning is the same (`mcmc_steps`,
`mcmc_temp`, `epsilon`, `epsilon_latent`, `data_epsilon`, `ebm_lr_info`, ...); new keys
carry a one-line comment. `validate(config)` rejects unknown keys and impossible values
before anything compiles.
"""

import ml_collections

from hat_ebm_jax.datasets import IMAGE_DATASETS, TOY_DATASETS  # the one list of names

MODES = ('synthesis', 'joint', 'autoencoder', 'evaluate')


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by all experiments (docs/algorithm.md §8 'Common')."""
  c = ml_collections.ConfigDict()
  # --- run
  c.mode = 'synthesis'  # new: synthesis | joint | autoencoder | evaluate
  c.exp_name = 'hat_ebm'
  c.seed = 0
  c.num_training_steps = 50000
  c.batch_size = 128  # global batch over all devices and hosts
  # --- data (docs/algorithm.md §7)
  c.dataset = 'cifar10'  # new: tfds name, 'digits', or a 2D toy name
  c.data_dir = ''  # new: tfds data_dir ('' = tfds default); gs:// allowed
  c.split = 'train'  # new
  c.image_size = 32
  c.nch = 3  # new: image channels
  c.random_crop = False  # new: ImageNet-style random square crop
  c.shuffle_buffer = 10000  # new
  c.data_epsilon = 1e-3
  # --- networks (docs/algorithm.md §2)
  c.ebm_type = 'ebm_sngan32'
  c.ebm_ngf = 256
  c.gen_type = 'gen_sngan32'
  c.gen_ngf = 256
  c.z_sz = 128  # latent size nz of SN-GAN generators
  c.gen_factor = 2.0  # generator out_factor
  c.gen_bottom = 4  # new: spatial size after the generator's dense layer
  c.inf_type = 'inf_encoder32'  # autoencoder encoder
  c.inf_ngf = 256
  c.dtype = 'float32'  # new: network compute dtype (bfloat16 for TPU mixed precision)
  c.conv_algorithm = 'auto'  # new: 3x3 convs: 'auto' (Winograd where faster on CPU) | 'direct' | 'winograd'
  c.gen_weights = ''  # new: pretrained generator for joint mode (see checkpointing)
  # --- Langevin (docs/algorithm.md §3)
  c.mcmc_steps = 50
  c.mcmc_temp = 1e-8
  c.epsilon = 5e-4
  c.epsilon_latent = 0.0
  c.update_latents = ml_collections.config_dict.placeholder(bool)  # None: from mode
  c.use_noise = True
  c.tau_res = 0.0
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 2.5
  c.mcmc_unroll = 'auto'  # new: 'auto' | 'full' | int steps per unrolled chunk
  c.mcmc_update = 'sequential'  # new: 'sequential' (paper) | 'simultaneous' (opt-in)
  c.init_scale_latent = 1.0
  c.init_scale_res = 0.0
  # --- optimisation (docs/algorithm.md §5)
  c.ebm_lr_info = ((1e-4, 0),)
  c.gen_lr_info = ((1e-4, 0),)
  c.inf_lr_info = ((1e-4, 0),)  # new: encoder learning rate (autoencoder)
  c.ebm_opt_decay = 0.9999
  c.gen_opt_decay = 0.9999
  c.ema_warmup = True  # new: EMA decay min(*_opt_decay, (1+t)/(10+t)) (optim.ema_decay)
  c.energy_l2 = 0.0  # new: IGEBM's energy penalty on U = H / mcmc_temp (losses.energy_l2_penalty)
  c.nda_frac = 0.0  # new: erased data images (losses.erase_part) as extra negatives, this fraction of the batch
  c.clip_ebm_grad = False
  c.max_grad_norm = 50.0
  c.use_ema = False  # new: sample and evaluate with the EMA weights
  # --- synthesis
  c.persistent_size = 10000
  c.gen_loss_factor_coop = 1000.0
  # --- autoencoder
  c.loss_factor = 1000.0
  c.num_epochs = 100  # new: autoencoder epochs (num_training_steps = epochs * steps)
  c.steps_per_epoch = 499  # new
  c.test_steps = 99  # new: test-split batches per evaluation
  c.test_and_log_freq = 1  # in epochs
  # --- logging and checkpoints
  c.log_freq = 50
  c.plot_freq = 500
  c.checkpoint_freq = 1000  # new
  c.keep_checkpoints = 3  # new
  c.profile_steps = 0  # new: > 0: trace steps N..N+profile_num_steps-1 into workdir/profile (TensorBoard); 0 = off
  c.profile_num_steps = 5  # new: steps the profile_steps trace covers
  c.restore_step = ml_collections.config_dict.placeholder(int)  # new: resume from this step (None = newest complete)
  c.num_plot_samples = 64  # new
  c.num_final_samples = 256  # new: samples written to samples/final.npz
  c.final_metrics = False  # new: compute digits_fd / MMD at the end of training
  c.chain_length_factors = (1,)  # new: final metrics/evaluation also at these x mcmc_steps (long_run)
  # --- evaluation (mode 'evaluate': evaluate.py, docs/algorithm.md §9)
  c.eval_model_mode = ''  # new: nets of synthesis | joint ('' = from the run's config.json)
  c.eval_ckpt_dir = ''  # new: training workdir to evaluate ('' = --workdir itself)
  c.eval_ckpt_step = ml_collections.config_dict.placeholder(int)  # new: None = latest
  c.ebm_weights = ''  # new: imported EBM (TF prefix or convert dir), with gen_weights
  c.eval_name = ''  # new: WORKDIR/eval/<eval_name> ('' = <exp_name>_<weights>_step_seed)
  c.eval_seed = 0  # new: seed of the latents, Langevin noise and derived OOD sets
  c.num_eval_samples = 49920  # new: 520 x 96 (docs/algorithm.md §9); fewer: a proxy; 0: none
  c.eval_batch_size = 96  # new: global sampling batch, split over all devices
  c.num_saved_samples = 1000  # new: samples of each kind kept in samples.npz (-1 = all)
  c.fid_weights = ''  # new: FID Inception .npz (python -m hat_ebm_jax.fid.convert_weights)
  c.fid_stats = ''  # new: reference (mu, sigma) .npz; '' = from config.split, cached
  c.ood_datasets = ''  # new: e.g. 'noise,shuffled,inverted' or another image dataset
  c.ood_split = 'test'  # new: in-distribution split the OOD sets are compared with
  c.num_ood_samples = 1000  # new: images per OOD set, at most
  return c


# docs/algorithm.md §9's FID protocol: 520 batches of 96 samples, sampled unclipped. The original's
# evaluation configs name the residual clip `clip_langevin_grad` / `max_langevin_norm`,
# which its sampler does not read, so its evaluation sampling ran unclipped.
PAPER_EVALUATION = dict(clip_langevin_grad_res=False, num_eval_samples=49920,
                        eval_batch_size=96)


def evaluation_config(c: ml_collections.ConfigDict, **settings) -> ml_collections.ConfigDict:
  """An experiment's training config `c` turned (in place) into its evaluation config.

  `configs/<experiment>.py:eval` returns it; `python -m hat_ebm_jax.main` then runs
  `evaluate.run` (docs/algorithm.md §9):

      # a run of configs/cifar10_synth.py (its latest checkpoint, raw weights):
      python -m hat_ebm_jax.main --config=configs/cifar10_synth.py:eval --workdir=RUN \\
          --config.fid_weights=fid_inception.npz
      # the authors' TF checkpoints (or hat_ebm_jax.pretrained output directories):
      python -m hat_ebm_jax.main --config=configs/cifar10_synth.py:eval --workdir=OUT \\
          --config.ebm_weights=EBM_CKPT_PREFIX --config.gen_weights=GEN_CKPT_PREFIX \\
          --config.fid_weights=fid_inception.npz

  The nets stay those of the training config (`eval_model_mode` = its `mode`, which
  becomes 'evaluate'), `exp_name` becomes `eval_<exp_name>`, and `settings` (the
  paper's evaluation sampler: `mcmc_steps`, `epsilon`, `epsilon_latent`, `mcmc_temp`,
  `tau_res`, `init_scale_res`, and `**PAPER_EVALUATION` for the FID protocol: 520
  batches of 96 = 49,920 samples against as many `config.split` images, residual clip
  off as the original's evaluation ran) are set on top. `--config.eval_seed=S` for the
  spread over seeds. Results in `WORKDIR/eval/<eval_name>/results.json`.

  Joint runs keep the frozen generator in their checkpoints; to rebuild the run's state
  the generator named by its `gen_weights` (or `--config.gen_weights`) must still be
  readable.
  """
  unknown = sorted(set(settings) - set(c.keys()))
  if unknown:
    raise ValueError(f'evaluation_config: unknown key(s) {unknown}.')
  c.eval_model_mode = c.mode
  c.mode = 'evaluate'
  c.exp_name = f'eval_{c.exp_name}'
  for key, value in settings.items():
    c[key] = value
  return c


def train_or_eval(c: ml_collections.ConfigDict, arg: str,
                  **eval_settings) -> ml_collections.ConfigDict:
  """An experiment file's `get_config(arg)`: `c` (its training config) for `arg=''`,
  `evaluation_config(c, **eval_settings)` for `arg='eval'` (`--config=FILE.py:eval`)."""
  if arg == 'eval':
    return evaluation_config(c, **eval_settings)
  if arg:
    raise ValueError(f'Unknown config argument {arg!r}: give none (training) or '
                     '\'eval\' (--config=configs/<experiment>.py:eval).')
  return c


def validate(config) -> None:
  """Raises ValueError for an unknown key or an impossible value (before compiling)."""
  from hat_ebm_jax import langevin, models, optim  # pylint: disable=g-import-not-at-top
  base = base_config()
  allowed = set(base.keys()) | set(getattr(config, 'extra_keys', ()))
  unknown = sorted(set(config.keys()) - allowed - {'extra_keys'})
  if unknown:
    raise ValueError(f'Unknown config key(s) {unknown}. Known keys are those of '
                     'hat_ebm_jax/config_lib.py:base_config(); check the spelling.')
  if config.mode not in MODES:
    raise ValueError(f'Unknown mode {config.mode!r}; choose one of {", ".join(MODES)}.')
  if config.dataset not in IMAGE_DATASETS + TOY_DATASETS:
    raise ValueError(f'Unknown dataset {config.dataset!r}; choose one of '
                     f'{", ".join(IMAGE_DATASETS + TOY_DATASETS)}.')
  for key in ('batch_size', 'num_training_steps', 'log_freq', 'plot_freq',
              'checkpoint_freq', 'keep_checkpoints', 'image_size', 'nch'):
    if int(config[key]) <= 0:
      raise ValueError(f'config.{key} must be a positive integer; got {config[key]}.')
  for key, least in (('profile_steps', 0), ('profile_num_steps', 1)):
    value = config.get(key, least)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
      raise ValueError(f'config.{key} must be an integer >= {least}; got {value!r}.')
  for key in ('ebm_type', 'gen_type', 'inf_type'):
    if config[key] not in models.NAMES:
      raise ValueError(f'config.{key}={config[key]!r} is not a known net; known: '
                       f'{", ".join(models.NAMES)}.')
  for key in ('data_epsilon', 'energy_l2'):
    if config[key] < 0:
      raise ValueError(f'config.{key} must be >= 0; got {config[key]}.')
  if not 0 <= config.nda_frac <= 1:
    raise ValueError(f'config.nda_frac must be in [0, 1]; got {config.nda_frac}.')
  if config.mode in ('synthesis', 'joint', 'evaluate'):
    langevin.Settings.from_config(config)
    for key in ('ebm_lr_info', 'gen_lr_info'):
      optim.check_lr_info(config[key], f'config.{key}')
    if not 0 <= config.ebm_opt_decay < 1 or not 0 <= config.gen_opt_decay < 1:
      raise ValueError('config.ebm_opt_decay and gen_opt_decay must be in [0, 1).')
  if config.mode == 'synthesis':
    if config.persistent_size < config.batch_size:
      raise ValueError(f'config.persistent_size ({config.persistent_size}) must be at '
                       f'least the batch size ({config.batch_size}).')
  if config.mode == 'joint' and not config.gen_weights:
    raise ValueError('Joint mode needs a pretrained generator: set --config.gen_weights '
                     'to an orbax checkpoint written by `python -m hat_ebm_jax.pretrained`, '
                     'a TF checkpoint prefix, or an autoencoder run\'s workdir.')
  if config.mode == 'autoencoder':
    optim.check_lr_info(config.gen_lr_info, 'config.gen_lr_info')
    optim.check_lr_info(config.inf_lr_info, 'config.inf_lr_info')
  if 'chain_length_factors' in config:
    from hat_ebm_jax import long_run  # pylint: disable=g-import-not-at-top
    long_run.check_factors(config.chain_length_factors)
  if config.dtype not in ('float32', 'bfloat16', 'float16'):
    raise ValueError(f"config.dtype must be 'float32', 'bfloat16' or 'float16'; got "
                     f'{config.dtype!r}.')
  if config.conv_algorithm not in models.CONV_ALGORITHMS:
    raise ValueError(f'config.conv_algorithm must be one of {models.CONV_ALGORITHMS}; '
                     f'got {config.conv_algorithm!r}.')


def load_config_file(path: str, *args) -> ml_collections.ConfigDict:
  """`get_config(*args)` of a config file, as `--config=path[:arg]` would load it."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  name = os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(f'hat_ebm_config_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(*args)
