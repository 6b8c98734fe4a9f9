"""Refinement on the offline default: a Hat EBM learned on top of a pretrained, frozen
digits generator, in joint mode (the digits counterpart of `configs/cifar10_refine.py`,
where the paper refines an SN-GAN from FID 18.58 to 14.04, -24%).

The generator is a digits synthesis run's (`configs/digits.py`): `--config.gen_weights`
names its workdir (its latest checkpoint's generator, raw weights), a
`python -m hat_ebm_jax.pretrained` directory or a TF checkpoint prefix. The EBM is new;
it is trained with chains that move both the latent `z` and the residual `y`, so that
the refined samples `G(z) + y` can be compared with the generator alone, `G(z)`, on the
same starting latents (`digits_fd_gen` against `digits_fd_hat` in `final_metrics.json`):

    python -m hat_ebm_jax.main --config=configs/digits.py --workdir=runs/digits
    python -m hat_ebm_jax.main --config=configs/digits_refine.py --workdir=runs/refine \
        --config.gen_weights=runs/digits

`configs/digits_refine.py:eval` evaluates the run as `configs/digits.py:eval` does.
"""

from hat_ebm_jax import config_lib


def get_config(arg: str = ''):
  """The training config; `arg='eval'` its evaluation config."""
  c = config_lib.base_config()
  c.exp_name = 'digits_refine'
  c.mode = 'joint'
  c.dataset = 'digits'
  c.image_size = 16
  c.nch = 1
  c.batch_size = 64
  # 1,200 steps with energy_l2=1e-7, or batch 128 with it, refined the default's generator
  # no better (+2% / +30%, -13% / +21% on seeds 3 / 4; docs/evaluation.md, "Refinement").
  c.num_training_steps = 400
  # The nets of configs/digits.py: the generator must be that run's.
  c.ebm_type, c.ebm_ngf = 'ebm_sngan32', 32
  c.gen_type, c.gen_ngf, c.gen_factor, c.gen_bottom = 'gen_sngan32', 32, 2.0, 2
  c.z_sz = 32
  c.ebm_lr_info = ((1e-4, 0),)  # constant; a decay at 300 was worse on 4 of 5 seeds
  c.mcmc_steps = 20
  c.epsilon = 5e-4
  c.epsilon_latent = 1e-4
  c.mcmc_temp = 1e-8
  c.clip_langevin_grad_res = True
  c.max_langevin_norm_res = 0.75
  c.shuffle_buffer = 1497
  c.log_freq = 50
  c.plot_freq = 200
  c.checkpoint_freq = 200
  c.num_plot_samples = 64
  c.num_final_samples = 1000
  c.final_metrics = True
  return config_lib.train_or_eval(
      c, arg, num_eval_samples=1024, eval_batch_size=128,
      ood_datasets='noise,shuffled,inverted,constant,letters', ood_split='test',
      num_ood_samples=1000)  # the 300 test digits; 1,000 of each drawn set
