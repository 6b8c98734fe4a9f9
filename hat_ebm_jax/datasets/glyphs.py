"""Letters and symbols drawn like scikit-learn's digits: an offline OOD set for digits.

The digits were made from 32x32 binary bitmaps of handwriting, each 4x4 block counted
into one of 17 grey levels (0..16) of an 8x8 image. `render` draws glyphs the same way:
a character in one of matplotlib's DejaVu fonts (they ship with matplotlib, so nothing is
downloaded), slanted, scaled to fill the bitmap's height as the handwriting does, its
strokes thickened, binarised at 32x32 and pooled into 8x8 counts, then scaled to the
digits' uint8 range. `digits.to_model_images` then gives the
model's view, as for the digits. This is to the digits what notMNIST is to MNIST:
strokes of the same thickness and grey range, other shapes.

Characters that a digit could pass for (`O o I l S s Z z B b g q G`) are left out.
"""

import functools
import os
from typing import List

import numpy as np

CHARACTERS = ''.join(c for c in 'ACDEFHJKLMNPRTUVWXYacdefhijkmnprtuvwxy+=#%&@?*<>$'
                     if c not in 'OoIlSsZzBbgqG')
FONTS = ('DejaVuSans.ttf', 'DejaVuSans-Bold.ttf', 'DejaVuSans-Oblique.ttf',
         'DejaVuSerif.ttf', 'DejaVuSerif-Bold.ttf', 'DejaVuSansMono.ttf')
_BITMAP = 32  # the digits' bitmap size before pooling
_POOL = 4  # 32x32 -> 8x8
# The fixed draws of one character (`render_character`): every font, two heights, three
# slants, thin and thickened: 6 x 2 x 3 x 2 = 72 images.
HEIGHTS = (26, 30)
SHEARS = (-0.2, 0.0, 0.2)
THICKENINGS = (0, 1)


@functools.lru_cache(maxsize=None)
def _font(name: str, size: int):
  import matplotlib  # pylint: disable=g-import-not-at-top
  from PIL import ImageFont  # pylint: disable=g-import-not-at-top
  return ImageFont.truetype(
      os.path.join(matplotlib.get_data_path(), 'fonts', 'ttf', name), size)


def _bitmap(char: str, font: str, height: int, shear: float, thicken: int) -> np.ndarray:
  """A `[32, 32]` bool bitmap of `char`: drawn large, slanted by `shear`, its ink box
  scaled to `height` rows (width by its aspect, at most 32) and centred as the digits'
  bitmaps are, strokes dilated `thicken` times (handwriting is thicker than type)."""
  from PIL import Image, ImageDraw  # pylint: disable=g-import-not-at-top
  import scipy.ndimage  # pylint: disable=g-import-not-at-top
  big = 4 * _BITMAP
  canvas = Image.new('L', (2 * big, 2 * big), 0)
  ImageDraw.Draw(canvas).text((big // 2, big // 2), char, fill=255, font=_font(font, big))
  canvas = canvas.transform(canvas.size, Image.AFFINE, (1.0, shear, -shear * big, 0, 1, 0),
                            resample=Image.BILINEAR)
  left, top, right, bottom = canvas.getbbox()
  ink = canvas.crop((left, top, right, bottom))
  width = int(np.clip(round(height * ink.size[0] / max(ink.size[1], 1)), 4, _BITMAP))
  ink = np.asarray(ink.resize((width, height), Image.BILINEAR)) >= 96
  out = np.zeros((_BITMAP, _BITMAP), bool)
  r, c = (_BITMAP - height) // 2, (_BITMAP - width) // 2
  out[r:r + height, c:c + width] = ink
  return scipy.ndimage.binary_dilation(out, iterations=thicken) if thicken else out


def _digit_form(bitmap: np.ndarray) -> np.ndarray:
  """A `[32, 32]` bool bitmap as a `uint8 [8, 8]` digit image: 4x4 ink counts (0..16,
  as the digits) scaled to 0..255."""
  counts = bitmap.reshape(8, _POOL, 8, _POOL).sum(axis=(1, 3))
  return np.round(counts * (255.0 / 16.0)).astype(np.uint8)


def render(n: int, rng: np.random.Generator) -> np.ndarray:
  """`n` glyph images `uint8 [n, 8, 8, 1]` in the digits' form (0..255 in 17 levels).

  Each: a character of `CHARACTERS` and a font of `FONTS`, slanted by up to 0.25, its
  ink 24-32 rows high, strokes dilated 0-1 times, all drawn from `rng`.
  """
  out: List[np.ndarray] = []
  for _ in range(n):
    bitmap = _bitmap(CHARACTERS[rng.integers(len(CHARACTERS))],
                     FONTS[rng.integers(len(FONTS))], int(rng.integers(24, 33)),
                     float(rng.uniform(-0.25, 0.25)), int(rng.integers(0, 2)))
    out.append(_digit_form(bitmap))
  return np.stack(out)[..., None]


def render_character(char: str) -> np.ndarray:
  """`char` drawn every fixed way, `uint8 [72, 8, 8, 1]` in the digits' form: each font
  of `FONTS`, ink `HEIGHTS` rows high, slanted by each of `SHEARS`, strokes dilated each
  of `THICKENINGS` times. The same for every call (no randomness): the per-character
  scores of `benchmarks.ood_checkpoints --by_character`."""
  return np.stack([_digit_form(_bitmap(char, font, height, shear, thicken))
                   for font in FONTS for height in HEIGHTS for shear in SHEARS
                   for thicken in THICKENINGS])[..., None]
