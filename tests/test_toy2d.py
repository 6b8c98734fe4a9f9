"""The 2D toy densities: shapes, determinism and the geometry that names them."""

import numpy as np
import pytest

from hat_ebm_jax.datasets import toy2d

N = 20000


def _sample(name, seed=0, n=N):
  return toy2d.sample(name, n, np.random.default_rng(seed))


def _rotate(x, degrees):
  a = np.deg2rad(degrees)
  return x @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T


def _histogram_distance(a, b):
  """Total variation (x2) between 20x20 histograms on [-4, 4]^2."""
  bins = np.linspace(-4, 4, 21)
  ha = np.histogram2d(a[:, 0], a[:, 1], bins=[bins, bins])[0] / len(a)
  hb = np.histogram2d(b[:, 0], b[:, 1], bins=[bins, bins])[0] / len(b)
  return np.abs(ha - hb).sum()


@pytest.mark.parametrize('name', toy2d.NAMES)
def test_sample_is_float32_n_by_2_in_roughly_minus4_4(name):
  x = _sample(name)
  assert x.shape == (N, 2) and x.dtype == np.float32
  assert np.isfinite(x).all()
  assert np.mean(np.abs(x).max(1) < 4.0) > 0.99
  assert np.abs(x).max() < 6.0


@pytest.mark.parametrize('name', toy2d.NAMES)
def test_sample_is_a_function_of_the_generator(name):
  np.testing.assert_array_equal(_sample(name, 3, 100), _sample(name, 3, 100))
  assert not np.array_equal(_sample(name, 3, 100), _sample(name, 4, 100))


def test_eight_gaussians_has_eight_equal_modes_on_a_circle():
  x = _sample('eight_gaussians')
  centers = toy2d.eight_gaussians_centers()
  dist = np.linalg.norm(x[:, None] - centers[None], axis=-1)
  mode_share = np.bincount(dist.argmin(1), minlength=8) / N
  assert np.all(np.abs(mode_share - 1 / 8) < 0.015)
  assert np.median(dist.min(1)) < 2 * toy2d.EIGHT_GAUSSIANS_STD
  assert np.mean(np.linalg.norm(x, axis=1) < 1.0) < 0.01  # a hole in the middle
  # Symmetric under a 1/8 turn, not under a 1/16 turn.
  y = _sample('eight_gaussians', seed=1)
  assert _histogram_distance(x, _rotate(y, 45)) < 0.2
  assert _histogram_distance(x, _rotate(y, 22.5)) > 0.8


def test_two_rings_are_two_concentric_circles_of_equal_mass():
  x = _sample('two_rings')
  r = np.linalg.norm(x, axis=1)
  outer, inner = toy2d.TWO_RINGS_RADII
  assert abs(np.mean(np.abs(r - inner) < 0.6) - 0.5) < 0.03
  assert abs(np.mean(np.abs(r - outer) < 0.6) - 0.5) < 0.03
  assert np.mean((r > 2.1) & (r < 2.4)) < 0.01  # empty between the rings
  assert np.all(np.abs(x.mean(0)) < 0.1)
  assert _histogram_distance(x, _rotate(_sample('two_rings', seed=1), 33)) < 0.2


def test_checkerboard_fills_the_even_squares_of_a_4x4_board():
  x = _sample('checkerboard')
  assert np.all(np.abs(x) <= 4.0)
  cells = np.floor(x / 2).astype(int)  # in {-2, ..., 1}^2
  assert np.all((cells.sum(1) % 2) == 0)
  counts = np.unique(cells, axis=0, return_counts=True)[1] / N
  assert len(counts) == 8 and np.all(np.abs(counts - 1 / 8) < 0.015)


def test_pinwheel_has_five_arms():
  x = _sample('pinwheel')
  y = _sample('pinwheel', seed=1)
  assert _histogram_distance(x, _rotate(y, 72)) < 0.2  # a 1/5 turn maps arms to arms
  assert _histogram_distance(x, _rotate(y, 36)) > 1.0  # a 1/10 turn does not
  assert np.all(np.abs(x.mean(0)) < 0.1)


def test_unknown_name_raises():
  with pytest.raises(ValueError, match='eight_gaussians'):
    toy2d.sample('swiss_roll', 10, np.random.default_rng(0))
