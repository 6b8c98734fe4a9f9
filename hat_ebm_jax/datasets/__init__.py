"""Dataset sources that ship with the package (no downloads): digits and 2D toys.

The names of every dataset of docs/algorithm.md §7 are defined here, once (no imports:
`config_lib`, `input_pipeline` and `datasets/toy2d.py` read them without loading anything else):

* `TFDS_DATASETS`: tfds image datasets, prepared with `python -m hat_ebm_jax.prepare_data`;
* `IMAGE_DATASETS`: those and `digits` (shipped);
* `TOY_DATASETS`: the 2D toy densities of `datasets/toy2d.py`.
"""

TFDS_DATASETS = ('cifar10', 'celeb_a', 'imagenet2012')
IMAGE_DATASETS = TFDS_DATASETS + ('digits',)
TOY_DATASETS = ('eight_gaussians', 'two_rings', 'checkerboard', 'pinwheel')
