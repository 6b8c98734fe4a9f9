"""2D toy helpers: a deliberately weak pretrained generator for refinement, and the energy
landscape of a trained toy run.

Refinement (joint mode) needs a pretrained generator to refine. For a toy density this
module makes one: `pretrain_weak_generator(config, out_dir, steps)` fits the toy MLP
generator `config.gen_type` (`gen_toy`) for a few hundred Adam steps with a kernel MMD loss
at *wide* bandwidths only, so `G(z)` gets the rough extent of the data (for eight Gaussians,
a blurry ring) but not its modes, and saves it as a pretrained-weights directory that
`config.gen_weights` loads (`pretrained.save_pretrained`).

    python -m hat_ebm_jax.toy --config=configs/toy2d.py:refine --out=/tmp/weak_gen
    python -m hat_ebm_jax.main --config=configs/toy2d.py:refine \\
        --config.gen_weights=/tmp/weak_gen --workdir=/tmp/toy_refine

Pass the same config (and `--config.dataset=...` overrides) to both commands so the
generator's architecture matches. `energy_grid(config, workdir)` evaluates the trained hat
network `H` on a grid (for `exp(-H)` heatmaps), `plot_run` draws data, `G(z)`, `G(z) + y`
and the landscape of a finished run.
"""

from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hat_ebm_jax import checkpointing, cli, config_lib, models, pretrained
from hat_ebm_jax.datasets import toy2d

# Kernel widths of the weak generator's MMD loss: wide enough to place the mass, too wide
# to resolve modes of std ~0.35 (eight Gaussians) or rings of noise 0.24.
WEAK_BANDWIDTHS = (1.0, 2.0)
WEAK_STEPS = 300


def _mmd_loss(x: jax.Array, y: jax.Array, bandwidths: Sequence[float]) -> jax.Array:
  """Biased squared MMD (sum of Gaussian kernels) between `[N, 2]` and `[M, 2]`."""
  def k(a, b):
    d2 = jnp.sum(jnp.square(a[:, None, :] - b[None, :, :]), axis=-1)
    return sum(jnp.exp(-d2 / (2.0 * h * h)) for h in bandwidths)
  return jnp.mean(k(x, x)) + jnp.mean(k(y, y)) - 2.0 * jnp.mean(k(x, y))


def fit_weak_generator(config, steps: int = WEAK_STEPS, batch_size: int = 256,
                       lr: float = 1e-3,
                       bandwidths: Sequence[float] = WEAK_BANDWIDTHS):
  """Fits `config.gen_type` to `config.dataset` by wide-kernel MMD for `steps` steps.

  Returns `(module, variables)`. Deterministic given `config.seed`.
  """
  if config.dataset not in config_lib.TOY_DATASETS:
    raise cli.user_error(ValueError(
        'pretrain_weak_generator is for the 2D toys '
        f'({", ".join(config_lib.TOY_DATASETS)}); got config.dataset={config.dataset!r}. '
        'Pass a toy config, e.g. '
        '--config=configs/toy2d.py:refine.'))
  module = models.make_generator(config)
  nz = models.latent_shape(module)
  key = jax.random.PRNGKey(config.seed + 7)
  variables = models.init_variables(module, key)
  params = variables['params']
  tx = optax.adam(lr)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, key, data):
    z = config.init_scale_latent * jax.random.normal(key, (batch_size,) + nz)

    def loss_fn(p):
      return _mmd_loss(module.apply({**variables, 'params': p}, z), data, bandwidths)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(config.seed + 7)
  for i in range(int(steps)):
    data = toy2d.sample(config.dataset, batch_size, rng)
    params, opt_state, _ = step(params, opt_state, jax.random.fold_in(key, i), data)
  return module, {**variables, 'params': jax.device_get(params)}


def pretrain_weak_generator(config, out_dir: str, steps: int = WEAK_STEPS, **kwargs) -> str:
  """Fits a weak toy generator (`fit_weak_generator`) and saves it to `out_dir` (which
  must not exist or be empty) for `config.gen_weights`. Returns `out_dir`."""
  module, variables = fit_weak_generator(config, steps, **kwargs)
  return pretrained.save_pretrained(out_dir, config.gen_type, models.net_kwargs(module),
                                    variables)


def energy_grid(config, workdir: str, lim: float = 4.5, n: int = 121,
                use_ema: bool = False) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`(xs [n], ys [n], H [n, n])`: the latest checkpoint's hat network on a grid over
  `[-lim, lim]^2`; `H[i, j]` is the energy at `(xs[j], ys[i])` (as `plt.imshow` wants)."""
  raw = checkpointing.restore_raw(workdir)
  params = (raw['ema'] if use_ema else raw['params'])['ebm']
  ebm = models.create(config.ebm_type, ngf=config.ebm_ngf, dtype=config.dtype)
  xs = np.linspace(-lim, lim, n, dtype=np.float32)
  gx, gy = np.meshgrid(xs, xs)
  points = np.stack([gx.ravel(), gy.ravel()], 1)
  h = jax.jit(lambda p, x: ebm.apply({'params': p}, x))(params, points)
  return xs, xs.copy(), np.asarray(h, np.float64).reshape(n, n)


def density_from_energy(h: np.ndarray, temp: float = 1.0) -> np.ndarray:
  """`exp(-H / T)` normalised to sum 1 over the grid (shifted for stability)."""
  logits = -(h - h.min()) / temp
  p = np.exp(logits - logits.max())
  return p / p.sum()


def plot_run(config, workdir: str, path: Optional[str] = None, lim: float = 4.5,
             metrics: Optional[Dict[str, float]] = None):
  """Data, `G(z)`, `G(z) + y` (from `samples/final.npz`) and `exp(-H / T)` of a finished
  toy run in one row of four panels. Saves to `path` if given; returns the figure."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  wd = epath.Path(workdir)
  with (wd / 'samples' / 'final.npz').open('rb') as f:
    final = dict(np.load(f))
  data = toy2d.sample(config.dataset, len(final['hat']), np.random.default_rng(0))
  xs, ys, h = energy_grid(config, workdir, lim)
  metrics = metrics or {}
  fig, axes = plt.subplots(1, 4, figsize=(16, 4))
  panels = (('data', data), (f'G(z)  mmd {metrics.get("mmd_gen", float("nan")):.4f}',
                             final['gen']),
            (f'G(z) + y  mmd {metrics.get("mmd_hat", float("nan")):.4f}', final['hat']))
  for ax, (title, pts) in zip(axes, panels):
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
    ax.set_title(title)
  axes[3].imshow(density_from_energy(h, config.mcmc_temp), origin='lower',
                 extent=(xs[0], xs[-1], ys[0], ys[-1]), cmap='viridis')
  axes[3].set_title('exp(-H(x) / T)')
  for ax in axes:
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect('equal')
  fig.tight_layout()
  if path:
    fig.savefig(path, dpi=80)
  return fig


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  config = f.config
  path = pretrain_weak_generator(config, f.out, f.steps)
  print(f'Wrote a weak {config.gen_type} for {config.dataset} ({f.steps} MMD steps) to '
        f'{path}; refine it with --config.gen_weights={path}')


if __name__ == '__main__':
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'Toy config, e.g. '
                                  'configs/toy2d.py:refine (same as for the joint run).')
  flags.DEFINE_string('out', None, 'Output directory (must not exist or be empty).')
  flags.DEFINE_integer('steps', WEAK_STEPS, 'MMD fitting steps.')
  flags.mark_flags_as_required(['config', 'out'])
  cli.run(main)
