"""Out-of-distribution detection with the energy `H(x)` (evaluation, docs/algorithm.md §9).

`config.ood_datasets` ('noise,shuffled,inverted,constant,letters' or other image
datasets) names the OOD sets; `num_ood_samples` images of `config.ood_split` are the
in-distribution set. Each OOD set gets an AUROC against it (`metrics.ood_auroc`, OOD =
higher energy), and beside it the AUROC of a simple baseline that knows only the
training pixels: the negative log-likelihood of a Gaussian fitted to them
(`gaussian_nll_score`). `evaluate` writes `ood.json`, `ood.md`, `ood.csv` and
`ood_hist.png` (`evaluate_ood`).

The derived sets: `noise` (uniform pixels), `shuffled` (each in-distribution image's
pixels permuted), `inverted` (`-x`), `constant` (one grey level an image, uniform in
`[-1, 1]`: simple images that likelihood models often score as *more* likely than the
data), and, for digits only, `letters` (letters and symbols drawn like the digits:
`datasets.glyphs`, as notMNIST is to MNIST).
"""

import json
import zlib
from typing import Any, Callable, Dict, List, Optional

import numpy as np
from absl import logging
from etils import epath

from hat_ebm_jax import input_pipeline, metrics, visualize
from hat_ebm_jax.datasets import IMAGE_DATASETS, TOY_DATASETS

DERIVED_OOD = ('noise', 'shuffled', 'inverted', 'constant', 'letters')
DIGITS_ONLY_OOD = ('letters',)


def ood_names(config) -> List[str]:
  """`config.ood_datasets` ('noise,shuffled,...') as a list of names."""
  return [s.strip() for s in str(config.ood_datasets or '').split(',') if s.strip()]


def check_config(config) -> List[str]:
  """Raises ValueError naming the key and the fix for OOD settings that cannot work.
  Returns `ood_names(config)`. Reads nothing from disk."""
  names = ood_names(config)
  if names and config.dataset in TOY_DATASETS:
    raise ValueError('config.ood_datasets is for image datasets; the 2D toys have no OOD '
                     'sets. Set --config.ood_datasets=\'\'.')
  for name in names:
    if name in DIGITS_ONLY_OOD and config.dataset != 'digits':
      raise ValueError(f'config.ood_datasets: {name!r} is drawn like the digits and is '
                       f'an OOD set for dataset digits only; config.dataset is '
                       f'{config.dataset!r}. Drop it from --config.ood_datasets.')
    if name not in DERIVED_OOD + IMAGE_DATASETS or name == config.dataset:
      raise ValueError(
          f'config.ood_datasets: unknown OOD set {name!r}; give a comma-separated list '
          f'of {", ".join(DERIVED_OOD)} (derived from config.ood_split) or an image '
          f'dataset other than {config.dataset!r} '
          f'({", ".join(d for d in IMAGE_DATASETS if d != config.dataset)}).')
  if names and int(config.num_ood_samples) < 1:
    raise ValueError(f'config.num_ood_samples must be >= 1; got {config.num_ood_samples}.')
  return names


def check_available(config) -> None:
  """Raises `input_pipeline.DatasetNotFoundError` when the in-distribution dataset or an
  OOD dataset is a tfds dataset that is not prepared (derived sets need nothing)."""
  for name in [config.dataset] + ood_names(config):
    if name in input_pipeline.TFDS_DATASETS:
      input_pipeline.tfds_builder(name, config.data_dir)


def shuffle_pixels(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Each image `[H, W, C]` of `[N, H, W, C]` with its `H * W` pixel positions permuted
  (its own permutation; a pixel's channels move together)."""
  n, h, w, c = images.shape
  flat = images.reshape(n, h * w, c)
  perms = np.argsort(rng.random((n, h * w)), axis=1)
  return np.take_along_axis(flat, perms[:, :, None], axis=1).reshape(images.shape)


def ood_sets(config, x_in: np.ndarray) -> Dict[str, np.ndarray]:
  """The OOD sets of `config.ood_datasets`, each `[<= num_ood_samples, S, S, nch]`.

  Derived from the in-distribution `x_in` (as many images): `shuffled`, `x_in` with each
  image's pixels permuted; `inverted`, `-x_in`. Drawn, `num_ood_samples` images (more
  than `x_in` where its split is smaller, as the digits' 300 test images): `noise`,
  uniform in `[-1, 1]`; `constant`, one uniform grey level an image; `letters`, glyphs
  drawn like the digits (`datasets.glyphs.render`) through the digits' preprocessing. A
  dataset name: the first images of its `ood_split` through the same preprocessing.
  A set's randomness is `default_rng([eval_seed, crc32(its name)])`: the same set
  whatever else is listed.
  """
  out = {}
  n = int(config.num_ood_samples)
  for name in ood_names(config):
    rng = np.random.default_rng([int(config.eval_seed), zlib.crc32(name.encode())])
    if name == 'noise':
      out[name] = rng.uniform(-1.0, 1.0, (n,) + x_in.shape[1:]).astype(np.float32)
    elif name == 'shuffled':
      out[name] = shuffle_pixels(x_in, rng)
    elif name == 'inverted':
      out[name] = -x_in
    elif name == 'constant':
      levels = rng.uniform(-1.0, 1.0, (n, 1, 1, 1))
      out[name] = np.broadcast_to(levels, (n,) + x_in.shape[1:]).astype(np.float32)
    elif name == 'letters':
      from hat_ebm_jax.datasets import digits, glyphs  # pylint: disable=g-import-not-at-top
      out[name] = digits.to_model_images(glyphs.render(n, rng), x_in.shape[1])
    else:
      other = config.copy_and_resolve_references()
      with other.unlocked():
        other.dataset = name
      out[name] = input_pipeline.load_array(other, config.ood_split,
                                            int(config.num_ood_samples))
  return out


def gaussian_nll_score(x_train: np.ndarray,
                       shrinkage: float = 1e-2) -> Callable[[np.ndarray], np.ndarray]:
  """The baseline OOD score: `x [N, ...] -> [N]`, the negative log-likelihood (up to a
  constant) of a full-covariance Gaussian fitted to `x_train [M, ...]` (its covariance
  shrunk toward `shrinkage` x its mean variance, so that it is invertible for
  `M < dim`). Higher = more OOD, as the energy."""
  flat = x_train.reshape(len(x_train), -1).astype(np.float64)
  mean = flat.mean(0)
  cov = np.cov(flat, rowvar=False)
  cov += shrinkage * np.trace(cov) / len(cov) * np.eye(len(cov))
  precision = np.linalg.inv(cov)

  def score(x: np.ndarray) -> np.ndarray:
    d = x.reshape(len(x), -1).astype(np.float64) - mean
    return 0.5 * np.einsum('ni,ij,nj->n', d, precision, d)

  return score


def ood_table(energy_in: np.ndarray, energies: Dict[str, np.ndarray],
              baseline_in: Optional[np.ndarray] = None,
              baselines: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Dict]:
  """Per OOD set: AUROC (OOD = higher energy), its size and mean energy; with
  `baseline_in`/`baselines` (the same sets' baseline scores) also `auroc_baseline`."""
  table = {name: dict(auroc=metrics.ood_auroc(energy_in, e), n=int(e.size),
                      mean_energy=float(np.mean(e)), std_energy=float(np.std(e)))
           for name, e in energies.items()}
  if baselines is not None:
    for name, b in baselines.items():
      table[name]['auroc_baseline'] = metrics.ood_auroc(baseline_in, b)
  return table


def ood_markdown(in_name: str, n_in: int, mean_in: float, table: Dict) -> str:
  """`ood_table` as a Markdown table, the in-distribution set in the AUROC header."""
  base = any('auroc_baseline' in v for v in table.values())
  lines = [f'| OOD set | n | mean H(x) | AUROC vs {in_name} (n={n_in}, mean H(x) '
           f'{mean_in:.4g}) |' + (' baseline AUROC (Gaussian NLL) |' if base else ''),
           '| --- | --- | --- | --- |' + (' --- |' if base else '')]
  lines += [f'| {k} | {v["n"]} | {v["mean_energy"]:.4g} | {v["auroc"]:.4f} |'
            + (f' {v["auroc_baseline"]:.4f} |' if base else '')
            for k, v in table.items()]
  return '\n'.join(lines) + '\n'


def ood_csv(in_name: str, table: Dict) -> str:
  """`ood_table` as CSV: in_distribution, ood_set, n, mean_energy, auroc."""
  rows = ['in_distribution,ood_set,n,mean_energy,auroc,auroc_baseline']
  rows += [f'{in_name},{k},{v["n"]},{v["mean_energy"]:.6g},{v["auroc"]:.6f},'
           f'{v.get("auroc_baseline", float("nan")):.6f}' for k, v in table.items()]
  return '\n'.join(rows) + '\n'


def evaluate_ood(config, out_dir: epath.Path, energy: Callable[[np.ndarray], np.ndarray],
                 weights: str, is_chief: bool) -> Dict[str, Any]:
  """Energies `energy(x) -> [N]` of the in-distribution set and of each OOD set, their
  table (also as `results['ood']`), and on the chief `ood.json`, `ood.md`, `ood.csv`,
  `ood_hist.png` in `out_dir`. The baseline (`gaussian_nll_score`) is fitted to the first
  10,000 images of `train`. Raises FloatingPointError for non-finite energies."""
  x_in = input_pipeline.load_array(config, config.ood_split, int(config.num_ood_samples))
  sets = ood_sets(config, x_in)
  e_in = energy(x_in)
  energies = {k: energy(v) for k, v in sets.items()}
  bad = [k for k, v in [('in', e_in)] + list(energies.items()) if not np.isfinite(v).all()]
  if bad:
    raise FloatingPointError(f'Non-finite energies for {bad}: the EBM diverged.')
  in_name = f'{config.dataset}/{config.ood_split}'
  baseline = gaussian_nll_score(input_pipeline.load_array(config, 'train', 10000))
  table = ood_table(e_in, energies, baseline(x_in),
                    {k: baseline(v) for k, v in sets.items()})
  md = ood_markdown(in_name, len(e_in), float(np.mean(e_in)), table)
  logging.info('OOD detection by energy:\n%s', md)
  result = dict(in_distribution=dict(dataset=config.dataset, split=config.ood_split,
                                     n=int(len(e_in)), mean_energy=float(np.mean(e_in)),
                                     std_energy=float(np.std(e_in))),
                table=table, seed=int(config.eval_seed), weights=weights)
  if is_chief:
    (out_dir / 'ood.json').write_text(json.dumps(result, indent=2, sort_keys=True,
                                                 default=str))
    (out_dir / 'ood.md').write_text(md)
    (out_dir / 'ood.csv').write_text(ood_csv(in_name, table))
    visualize.save_energy_histogram(
        out_dir / 'ood_hist.png', f'{in_name} (in)', e_in,
        {f'{k} (AUROC {table[k]["auroc"]:.3f})': v for k, v in energies.items()})
  return result
