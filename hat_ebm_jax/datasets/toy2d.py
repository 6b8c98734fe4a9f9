"""2D toy densities (the standard ones of FFJORD, Grathwohl et al. 2019), for fast
experiments with the toy MLP EBMs.

`sample(name, n, rng) -> float32 [n, 2]`. All four sit in roughly `[-4, 4]^2`:

- `eight_gaussians`: 8 isotropic Gaussians, centres evenly spaced on a circle of radius
  `4 / sqrt(2) ~ 2.83` (angles `k * pi / 4`), std `0.5 / sqrt(2) ~ 0.35`.
- `two_rings`: two concentric noisy circles, radii 3 and 1.5, equal mass, radial Gaussian
  noise std 0.24 (sklearn `make_circles(factor=0.5, noise=0.08)` scaled by 3).
- `checkerboard`: uniform on the 8 squares of side 2 of the 4x4 board on `[-4, 4]^2`
  where `floor(x / 2) + floor(y / 2)` is even.
- `pinwheel`: 5 spiral arms (radial std 0.3, tangential std 0.1, rate 0.25), scaled by 2.

No module state: all randomness comes from the `rng` argument.
"""

import numpy as np

from hat_ebm_jax.datasets import TOY_DATASETS as NAMES

EIGHT_GAUSSIANS_RADIUS = 4.0 / np.sqrt(2.0)
EIGHT_GAUSSIANS_STD = 0.5 / np.sqrt(2.0)
TWO_RINGS_RADII = (3.0, 1.5)
PINWHEEL_ARMS = 5


def eight_gaussians_centers() -> np.ndarray:
  """float32 `[8, 2]`: the mode centres of `eight_gaussians`."""
  angles = np.arange(8) * (np.pi / 4)
  return (EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], 1)
          ).astype(np.float32)


def _eight_gaussians(n, rng):
  centers = eight_gaussians_centers().astype(np.float64)
  k = rng.integers(0, 8, size=n)
  return centers[k] + EIGHT_GAUSSIANS_STD * rng.standard_normal((n, 2))


def _two_rings(n, rng):
  radii = np.asarray(TWO_RINGS_RADII)[rng.integers(0, 2, size=n)]
  angles = rng.uniform(0.0, 2 * np.pi, size=n)
  points = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], 1)
  return points + 0.24 * rng.standard_normal((n, 2))


def _checkerboard(n, rng):
  x1 = rng.uniform(-2.0, 2.0, size=n)
  x2 = rng.uniform(0.0, 1.0, size=n) - 2.0 * rng.integers(0, 2, size=n)
  x2 = x2 + np.mod(np.floor(x1), 2)
  return 2.0 * np.stack([x1, x2], 1)


def _pinwheel(n, rng):
  radial_std, tangential_std, rate = 0.3, 0.1, 0.25
  arm_angles = np.linspace(0, 2 * np.pi, PINWHEEL_ARMS, endpoint=False)
  features = rng.standard_normal((n, 2)) * np.array([radial_std, tangential_std])
  features[:, 0] += 1.0
  labels = rng.integers(0, PINWHEEL_ARMS, size=n)
  angles = arm_angles[labels] + rate * np.exp(features[:, 0])
  rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles),
                        np.cos(angles)], 1).reshape(n, 2, 2)
  return 2.0 * np.einsum('ti,tij->tj', features, rotations)


_SAMPLERS = {'eight_gaussians': _eight_gaussians, 'two_rings': _two_rings,
             'checkerboard': _checkerboard, 'pinwheel': _pinwheel}


def sample(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
  """`n` i.i.d. points of the toy density `name`: float32 `[n, 2]`."""
  if name not in _SAMPLERS:
    raise ValueError(f'Unknown 2D toy dataset {name!r}; choose one of '
                     f'{", ".join(NAMES)}.')
  return np.asarray(_SAMPLERS[name](int(n), rng), np.float32)
