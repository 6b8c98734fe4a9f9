"""Losses of docs/algorithm.md §4. Each is a pure function of arrays; shapes in the docstrings."""

import jax
import jax.numpy as jnp


def ebm_loss(energy_data: jax.Array, energy_samples: jax.Array,
             mcmc_temp: float) -> jax.Array:
  """`(mean H(x_data) - mean H(x_samples)) / T`. Energies `[B]` or `[B, 1]` -> scalar."""
  return (jnp.mean(energy_data) - jnp.mean(energy_samples)) / mcmc_temp


def energy_l2_penalty(energy_data: jax.Array, energy_samples: jax.Array,
                      mcmc_temp: float, energy_l2: float) -> jax.Array:
  """The energy-magnitude penalty of IGEBM (Du & Mordatch 2019), centred:
  `energy_l2 * mean((U - mean U)^2)` over the tempered energies `U = H / T` of the data and
  the samples together. IGEBM penalises `mean U^2` itself; here the energy's constant is
  free (an initial SN-GAN EBM sits near `H = -0.3`, `U = -3e7` at `T = 1e-8`), so the
  penalty acts on the spread alone: the data-sample gap and each group's variance.
  Energies `[B]` or `[B, 1]` -> scalar."""
  h = jnp.concatenate([jnp.ravel(energy_data), jnp.ravel(energy_samples)])
  return energy_l2 * jnp.mean(jnp.square((h - jnp.mean(h)) / mcmc_temp))


def erase_part(images: jax.Array, key: jax.Array) -> jax.Array:
  """Negative data augmentation (Sinha et al. 2021) for `config.nda_frac`: each image
  `[B, H, W, C]` in `[-1, 1]` loses the part beyond a random line (direction uniform, the
  line through a point uniform in the image's central half), set to the background -1
  with a soft edge 2 pixels wide, so that its strokes end without a cut. A partial digit:
  as much like the data, stroke by stroke, as it can be while being no digit. -> same
  shape."""
  n, h, w = images.shape[:3]
  k_angle, k_point = jax.random.split(key)
  angle = jax.random.uniform(k_angle, (n, 1, 1), minval=0.0, maxval=2 * jnp.pi)
  centre = jax.random.uniform(k_point, (n, 2, 1, 1), minval=0.25, maxval=0.75)
  rows = jnp.arange(h, dtype=jnp.float32)[None, :, None] + 0.5
  cols = jnp.arange(w, dtype=jnp.float32)[None, None, :] + 0.5
  dist = (jnp.cos(angle) * (rows - centre[:, 0] * h)
          + jnp.sin(angle) * (cols - centre[:, 1] * w))  # signed, in pixels
  erased = jnp.clip(0.5 + dist / 2.0, 0.0, 1.0)[..., None].astype(images.dtype)
  return images - erased * (images + 1.0)


def gen_coop_loss(gen_images: jax.Array, targets: jax.Array,
                  gen_loss_factor_coop: float) -> jax.Array:
  """Cooperative generator loss `factor * mean((G(z_bank) - x_bank)^2)`. -> scalar."""
  return gen_loss_factor_coop * jnp.mean(jnp.square(gen_images - targets))


def autoencoder_loss(images: jax.Array, reconstructions: jax.Array,
                     loss_factor: float) -> jax.Array:
  """`loss_factor * mean((x - Dec(Enc(x) + noise))^2)`. Images `[B, H, W, C]` -> scalar."""
  return loss_factor * jnp.mean(jnp.square(images - reconstructions))
