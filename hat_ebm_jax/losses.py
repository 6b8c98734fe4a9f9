"""Losses of docs/algorithm.md §4. Each is a pure function of arrays; shapes in the docstrings."""

import jax
import jax.numpy as jnp


def ebm_loss(energy_data: jax.Array, energy_samples: jax.Array,
             mcmc_temp: float) -> jax.Array:
  """`(mean H(x_data) - mean H(x_samples)) / T`. Energies `[B]` or `[B, 1]` -> scalar."""
  return (jnp.mean(energy_data) - jnp.mean(energy_samples)) / mcmc_temp


def gen_coop_loss(gen_images: jax.Array, targets: jax.Array,
                  gen_loss_factor_coop: float) -> jax.Array:
  """Cooperative generator loss `factor * mean((G(z_bank) - x_bank)^2)`. -> scalar."""
  return gen_loss_factor_coop * jnp.mean(jnp.square(gen_images - targets))


def autoencoder_loss(images: jax.Array, reconstructions: jax.Array,
                     loss_factor: float) -> jax.Array:
  """`loss_factor * mean((x - Dec(Enc(x) + noise))^2)`. Images `[B, H, W, C]` -> scalar."""
  return loss_factor * jnp.mean(jnp.square(images - reconstructions))
