"""The three losses of docs/algorithm.md §4, against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hat_ebm_jax import losses

@pytest.mark.parametrize('shape', [(6,), (6, 1)])
def test_ebm_loss_is_energy_difference_over_temperature(shape):
  """(mean H(data) - mean H(samples)) / T, for energies [B] or [B, 1]."""
  rng = np.random.default_rng(0)
  e_data = rng.standard_normal(shape).astype(np.float32)
  e_samples = rng.standard_normal(shape).astype(np.float32)
  got = losses.ebm_loss(e_data, e_samples, 1e-3)
  assert got.shape == ()
  np.testing.assert_allclose(got, (e_data.mean() - e_samples.mean()) / 1e-3, rtol=1e-5)


def test_ebm_loss_gradient_pushes_data_down_and_samples_up():
  """d loss / d H(data_i) = 1/(B T) and d loss / d H(sample_i) = -1/(B T)."""
  g_data, g_samples = jax.grad(losses.ebm_loss, argnums=(0, 1))(
      jnp.zeros(4), jnp.zeros(4), 0.5)
  np.testing.assert_allclose(g_data, np.full(4, 0.5), rtol=1e-6)
  np.testing.assert_allclose(g_samples, np.full(4, -0.5), rtol=1e-6)


def test_gen_coop_loss_is_scaled_mean_squared_error():
  """factor * mean((G(z) - x)^2) over every pixel of the batch."""
  rng = np.random.default_rng(1)
  gen = rng.standard_normal((3, 4, 4, 3)).astype(np.float32)
  target = rng.standard_normal((3, 4, 4, 3)).astype(np.float32)
  got = losses.gen_coop_loss(gen, target, 1000.0)
  np.testing.assert_allclose(got, 1000.0 * np.mean((gen - target) ** 2), rtol=1e-5)


def test_autoencoder_loss_is_scaled_mean_squared_error():
  """loss_factor * mean((x - reconstruction)^2)."""
  rng = np.random.default_rng(2)
  x = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
  rec = rng.standard_normal((2, 8, 8, 3)).astype(np.float32)
  got = losses.autoencoder_loss(x, rec, 1000.0)
  np.testing.assert_allclose(got, 1000.0 * np.mean((x - rec) ** 2), rtol=1e-5)


@pytest.mark.parametrize('loss', [losses.gen_coop_loss, losses.autoencoder_loss])
def test_reconstruction_losses_vanish_at_the_target(loss):
  rng = np.random.default_rng(3)
  x = rng.standard_normal((2, 4, 4, 3)).astype(np.float32)
  assert float(loss(x, x, 1000.0)) == 0.0


def test_energy_l2_penalty_is_alpha_times_the_variance_of_the_tempered_energies():
  """energy_l2 * mean((U - mean U)^2), U = H / T over data and samples together, for
  energies [B] or [B, 1]; a constant added to every energy changes nothing."""
  rng = np.random.default_rng(4)
  e_data = rng.standard_normal((5, 1)).astype(np.float32) * 1e-3
  e_samples = rng.standard_normal(5).astype(np.float32) * 1e-3
  got = losses.energy_l2_penalty(e_data, e_samples, 1e-3, 0.5)
  u = np.concatenate([e_data.ravel(), e_samples]) / 1e-3
  np.testing.assert_allclose(got, 0.5 * np.var(u), rtol=1e-5)
  shifted = losses.energy_l2_penalty(e_data - 0.3, e_samples - 0.3, 1e-3, 0.5)
  np.testing.assert_allclose(shifted, got, rtol=1e-3)


def test_energy_l2_penalty_gradient_closes_the_data_sample_gap():
  """Data energies below the samples' get pushed up, samples' down: the gap the
  contrastive loss widens, the penalty narrows (d / d H_i = 2 a (H_i - mean H) / (N T^2))."""
  g_data, g_samples = jax.grad(losses.energy_l2_penalty, argnums=(0, 1))(
      jnp.array([-1.0, -1.0]), jnp.array([1.0, 1.0]), 0.5, 0.1)
  np.testing.assert_allclose(g_data, np.full(2, -2 * 0.1 / (4 * 0.25)), rtol=1e-6)
  np.testing.assert_allclose(g_samples, np.full(2, 2 * 0.1 / (4 * 0.25)), rtol=1e-6)
