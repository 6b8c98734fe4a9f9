"""Hat EBM on a 2D toy density: small MLP nets, trains in about a minute on a CPU.

    # synthesis (EBM and generator trained together), eight Gaussians:
    python -m hat_ebm_jax.main --config=configs/toy2d.py --workdir=/tmp/toy_synth
    # another density: eight_gaussians | two_rings | checkerboard | pinwheel
    python -m hat_ebm_jax.main --config=configs/toy2d.py:pinwheel --workdir=/tmp/toy_pw
    # refinement of a deliberately weak pretrained generator (joint mode, z and y move):
    python -m hat_ebm_jax.toy --config=configs/toy2d.py:refine --out=/tmp/weak_gen
    python -m hat_ebm_jax.main --config=configs/toy2d.py:refine \\
        --config.gen_weights=/tmp/weak_gen --workdir=/tmp/toy_refine

The argument after `:` is a comma-separated list of a mode (`synthesis` (default),
`refine` or `joint`) and/or a dataset name, e.g. `configs/toy2d.py:refine,two_rings`.
`--config.dataset=...` works as well.

At the end the run samples 1000 points and writes `final_metrics.json` with the squared
MMD (`metrics.mmd`) of `G(z)` (`mmd_gen`) and of `G(z) + y` (`mmd_hat`) against fresh
points of the true density; scatter plots of data, `G(z)` and `G(z) + y` are in
`samples/`.

Langevin at toy scale: the paper's `T = 1e-8`, `epsilon = 5e-4` and a clip on the residual
move are tuned for 3k-dimensional images; on points in `[-4, 4]^2` the sampler uses
`T = 0.1`, `epsilon = 0.1` (noise 0.1 per step, about 0.7 over 50 steps: a local
correction of `G(z)`, as in the paper), `epsilon_latent = 0.02` and no clipping.

Measured on 2 busy CPU cores (squared MMD to the true density, 1000 samples): eight
Gaussians synthesis (1000 steps, ~75 s) `G(z)` 0.0571 -> `G(z) + y` 0.0001; refinement of
the weak generator (600 steps, ~85 s) 0.0513 -> 0.005. Other densities may need more
steps, e.g. refinement on two_rings `--config.num_training_steps=1500`.
"""

from hat_ebm_jax import config_lib

MODES = {'synthesis': 'synthesis', 'refine': 'joint', 'joint': 'joint'}


def parse_arg(arg: str = ''):
  """`'refine,two_rings'` -> `('joint', 'two_rings')`; empty parts keep the defaults."""
  mode, dataset = 'synthesis', 'eight_gaussians'
  for part in (p.strip() for p in (arg or '').split(',')):
    if not part:
      continue
    if part in MODES:
      mode = MODES[part]
    elif part in config_lib.TOY_DATASETS:
      dataset = part
    else:
      raise ValueError(f'configs/toy2d.py: unknown argument {part!r}; give a mode '
                       f'({", ".join(MODES)}) and/or a dataset '
                       f'({", ".join(config_lib.TOY_DATASETS)}), comma-separated.')
  return mode, dataset


def get_config(arg: str = ''):
  mode, dataset = parse_arg(arg)
  c = config_lib.base_config()
  c.mode = mode
  c.exp_name = f'toy2d_{"refine" if mode == "joint" else "synth"}'
  c.dataset = dataset
  c.image_size = 2  # unused by the toy nets (points are [B, 2])
  c.nch = 1
  c.batch_size = 256
  c.num_training_steps = 1000
  # Nets: MLPs with 64 hidden units (EBM: swish, generator: relu, linear output).
  c.ebm_type, c.ebm_ngf = 'ebm_toy', 64
  c.gen_type, c.gen_ngf = 'gen_toy', 64
  c.z_sz = 2
  c.gen_factor = 1.0
  c.ebm_lr_info = ((1e-3, 0),)
  c.gen_lr_info = ((1e-3, 0),)
  c.ebm_opt_decay = c.gen_opt_decay = 0.999
  c.data_epsilon = 1e-2
  # Langevin (docs/algorithm.md §3) at toy scale, see the module docstring.
  c.mcmc_steps = 50
  c.mcmc_temp = 0.1
  c.epsilon = 0.1
  c.epsilon_latent = 0.02  # joint mode: z moves slowly (G stretches its steps ~3x)
  c.use_noise = True
  c.clip_langevin_grad_res = False
  c.max_langevin_norm_res = 2.5
  # A rolled loop: unrolling 50 steps (the CPU default, meant for convolutions) only
  # multiplies the compile time of these small MLPs. (Re-declared because the base
  # config's 'auto' is a string and ConfigDict keeps a field's type.)
  del c['mcmc_unroll']
  c.mcmc_unroll = 1
  c.persistent_size = 10000
  c.gen_loss_factor_coop = 1.0
  c.log_freq = 100
  c.plot_freq = 500
  c.checkpoint_freq = 500
  c.num_plot_samples = 1000
  c.num_final_samples = 1000
  c.final_metrics = True
  if mode == 'joint':
    # Each joint Langevin step also differentiates through G (z moves): about twice the
    # cost of a synthesis step, so fewer steps keep the run near a minute.
    c.num_training_steps = 600
  return c
