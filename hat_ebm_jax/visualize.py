"""Image grids, 2D scatter plots and energy histograms written as PNG (through
etils.epath: gs:// works). Plots use a bare Figure with the Agg canvas: no pyplot, so the
process's matplotlib backend (e.g. a notebook's inline backend) is left alone and no
figure stays open."""

import io
import math
from typing import Dict

import numpy as np
from etils import epath


def image_grid(images: np.ndarray, ncol: int = 0) -> np.ndarray:
  """`[N, H, W, C]` in [-1, 1] -> a uint8 grid `[rows*(H+2), ncol*(W+2), C]`."""
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  ncol = ncol or int(math.ceil(math.sqrt(n)))
  nrow = int(math.ceil(n / ncol))
  grid = np.ones((nrow * (h + 2), ncol * (w + 2), c), np.float32)
  for i in range(n):
    r, col = divmod(i, ncol)
    grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, col * (w + 2) + 1:col * (w + 2) + 1 + w] = (
        images[i] + 1) / 2
  return (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)


def _png_bytes_image(grid: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  mode_img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  buf = io.BytesIO()
  mode_img.save(buf, format='PNG')
  return buf.getvalue()


def _figure(figsize, dpi):
  """A bare Figure on the Agg canvas (no pyplot state)."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  return fig


def _png_bytes(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format='png', bbox_inches='tight')
  return buf.getvalue()


def _png_bytes_scatter(points: np.ndarray, title: str) -> bytes:
  fig = _figure((4, 4), 80)
  ax = fig.add_subplot()
  ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
  ax.set_xlim(-5, 5)
  ax.set_ylim(-5, 5)
  ax.set_aspect('equal')
  ax.set_title(title)
  return _png_bytes(fig)


def save_energy_histogram(path, in_label: str, energy_in: np.ndarray,
                          others: Dict[str, np.ndarray]) -> None:
  """Writes the densities of energies `energy_in [N]` and of each of `others` (label ->
  `[M]`) as overlaid histograms: 60 bins over the 0.5-99.5 percentiles of all of them,
  values outside clipped to the edges."""
  everything = np.concatenate([energy_in] + list(others.values()))
  lo, hi = np.percentile(everything, [0.5, 99.5])
  bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 60)
  fig = _figure((6, 4), 100)
  ax = fig.add_subplot()
  ax.hist(np.clip(energy_in, lo, hi), bins=bins, alpha=0.6, density=True, label=in_label)
  for label, e in others.items():
    ax.hist(np.clip(e, lo, hi), bins=bins, alpha=0.45, density=True, label=label)
  ax.set_xlabel('energy H(x)')
  ax.set_ylabel('density')
  ax.legend(fontsize=8)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(_png_bytes(fig))


def save_samples(path, samples: np.ndarray, title: str = '') -> np.ndarray:
  """Writes images `[N, H, W, C]` as a grid, or points `[N, 2]` as a scatter plot.

  Returns the picture as a uint8 array `[H, W, C]` (for image summaries)."""
  samples = np.asarray(samples)
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if samples.ndim == 2:
    png = _png_bytes_scatter(samples, title or path.stem)
  else:
    png = _png_bytes_image(image_grid(samples))
  path.write_bytes(png)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.open(io.BytesIO(png)).convert('RGB'))
