"""The OOD sets derived offline (`ood.ood_sets`) and the baseline beside the energy: the
letters are drawn like the digits (same grid, grey levels and ink), the constant images
are flat, every set is reproducible from `eval_seed`, and the Gaussian baseline ranks
what it was fitted to below what it was not."""

import numpy as np
import pytest

from hat_ebm_jax import input_pipeline, metrics, ood
from hat_ebm_jax.datasets import digits, glyphs
from tests.conftest import load, tiny, with_overrides


def digits_eval(**overrides):
  return with_overrides(load('digits', 'eval'), **overrides)


def test_letters_are_drawn_on_the_digits_grid_with_their_grey_levels():
  letters = glyphs.render(40, np.random.default_rng(0))
  real, _ = digits.load('test')
  assert letters.shape == (40, 8, 8, 1) and letters.dtype == np.uint8
  levels = np.round(np.arange(17) * 255.0 / 16.0)
  assert set(np.unique(letters)) <= set(levels)  # 4x4 counts of a 32x32 bitmap, as sklearn's
  # Ink like handwriting: the mean intensity within 30% of the digits', not blank, not full.
  assert 0.7 < letters.mean() / real.mean() < 1.3
  assert (letters.reshape(40, -1).max(1) == 255).mean() > 0.5


def test_one_character_is_drawn_the_same_72_ways_every_time():
  """`render_character`: every font, height, slant and thickness of one character, in
  the letters' form; no randomness, so per-character scores can be compared."""
  j = glyphs.render_character('j')
  assert j.shape == (72, 8, 8, 1) and j.dtype == np.uint8
  assert np.array_equal(j, glyphs.render_character('j'))
  assert len({x.tobytes() for x in j}) > 36  # the draws differ
  levels = np.round(np.arange(17) * 255.0 / 16.0)
  assert set(np.unique(j)) <= set(levels) and (j.reshape(72, -1).max(1) > 0).all()
  assert not np.array_equal(j, glyphs.render_character('J'))


def test_every_derived_set_has_the_in_distribution_shape_and_is_reproducible():
  c = digits_eval(ood_datasets='noise,shuffled,inverted,constant,letters',
                  num_ood_samples=24)
  x_in = input_pipeline.load_array(c, 'test', 24)
  sets = ood.ood_sets(c, x_in)
  assert list(sets) == ['noise', 'shuffled', 'inverted', 'constant', 'letters']
  for name, x in sets.items():
    assert x.shape == x_in.shape and x.dtype == np.float32, name
    assert -1.0 <= x.min() and x.max() <= 1.0, name
  flat = sets['constant'].reshape(24, -1)
  assert np.all(flat == flat[:, :1]) and flat.std() > 0.1  # one grey level an image
  again = ood.ood_sets(c, x_in)
  assert all(np.array_equal(sets[k], again[k]) for k in sets)
  other = ood.ood_sets(with_overrides(c, eval_seed=1), x_in)
  assert not np.array_equal(sets['letters'], other['letters'])


def test_a_set_is_the_same_whatever_else_is_listed_and_drawn_sets_may_outnumber_the_split():
  """The digits' test split has 300 images; the drawn sets have `num_ood_samples`, so
  that an AUROC against the letters does not hang on one draw of 300 glyphs."""
  c = digits_eval(ood_datasets='noise,shuffled,inverted,constant,letters',
                  num_ood_samples=400)
  x_in = input_pipeline.load_array(c, 'test', 400)
  assert len(x_in) == digits.NUM_TEST
  sets = ood.ood_sets(c, x_in)
  assert {k: len(v) for k, v in sets.items()} == dict(
      noise=400, shuffled=300, inverted=300, constant=400, letters=400)
  alone = ood.ood_sets(with_overrides(c, ood_datasets='letters'), x_in)
  assert np.array_equal(alone['letters'], sets['letters'])


def test_letters_are_an_ood_set_of_the_digits_only_and_unknown_sets_are_named():
  with pytest.raises(ValueError, match="'letters' .* digits only"):
    ood.check_config(with_overrides(load('cifar10_synth', 'eval'), ood_datasets='letters'))
  with pytest.raises(ValueError, match="unknown OOD set 'glyphs'.*constant, letters"):
    ood.check_config(digits_eval(ood_datasets='noise,glyphs'))


def test_the_gaussian_baseline_scores_what_it_was_fitted_to_as_most_likely():
  c = tiny()
  train = input_pipeline.load_array(c, 'train')
  test = input_pipeline.load_array(c, 'test', 100)
  score = ood.gaussian_nll_score(train)
  noise = np.random.default_rng(0).uniform(-1, 1, test.shape).astype(np.float32)
  assert metrics.ood_auroc(score(test), score(noise)) > 0.99
  assert metrics.ood_auroc(score(test), score(train[:100])) < 0.6  # no better than chance


def test_the_table_puts_the_baseline_beside_the_energy():
  e_in, e_out = np.zeros(10), np.ones(10)
  table = ood.ood_table(e_in, {'letters': e_out}, e_out, {'letters': e_in})
  assert table['letters']['auroc'] == 1.0 and table['letters']['auroc_baseline'] == 0.0
  md = ood.ood_markdown('digits/test', 10, 0.0, table)
  assert 'baseline AUROC (Gaussian NLL)' in md and '| letters | 10 | 1 | 1.0000 | 0.0000 |' in md
  assert ood.ood_csv('digits/test', table).splitlines()[1].endswith(',1.000000,0.000000')
