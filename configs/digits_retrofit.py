"""Retrofit on the offline default: a Hat EBM on the decoder of `configs/digits_ae.py`
(the digits counterpart of `configs/cifar10_retrofit.py`, paper FID 26.01).

The decoder alone, fed latents from the prior `N(0, I)`, draws poor digits; the EBM is
trained in joint mode with chains that move the latent and the residual from those
prior latents. `final_metrics.json` compares the decoder's prior samples (`digits_fd_gen`)
with the retrofit samples on the same starting latents (`digits_fd_hat`):

    python -m hat_ebm_jax.main --config=configs/digits_ae.py --workdir=runs/digits_ae
    python -m hat_ebm_jax.main --config=configs/digits_retrofit.py \
        --workdir=runs/digits_retrofit --config.gen_weights=runs/digits_ae

`configs/digits_retrofit.py:eval` evaluates the run as `configs/digits.py:eval` does.
"""

from hat_ebm_jax import config_lib


def get_config(arg: str = ''):
  """The training config; `arg='eval'` its evaluation config."""
  c = config_lib.base_config()
  c.exp_name = 'digits_retrofit'
  c.mode = 'joint'
  c.dataset = 'digits'
  c.image_size = 16
  c.nch = 1
  c.batch_size = 64
  c.num_training_steps = 200
  c.ebm_type, c.ebm_ngf = 'ebm_sngan32', 32
  c.gen_type, c.gen_ngf, c.gen_factor = 'gen_decoder32', 32, 2.0  # configs/digits_ae.py's
  c.ebm_lr_info = ((1e-4, 0),)
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
