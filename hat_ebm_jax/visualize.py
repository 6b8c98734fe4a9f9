"""Image grids and 2D scatter plots written as PNG (through etils.epath: gs:// works)."""

import io
import math

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


def _png_bytes_scatter(points: np.ndarray, title: str) -> bytes:
  # A bare Figure with the Agg canvas: no pyplot, so the process's matplotlib backend
  # (e.g. a notebook's inline backend) is left alone and no figure stays open.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=(4, 4), dpi=80)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
  ax.set_xlim(-5, 5)
  ax.set_ylim(-5, 5)
  ax.set_aspect('equal')
  ax.set_title(title)
  buf = io.BytesIO()
  fig.savefig(buf, format='png', bbox_inches='tight')
  return buf.getvalue()


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
