"""Samples at several chain lengths: the sampler's chains continued past `mcmc_steps`.

An EBM trained with short-run chains of `mcmc_steps` steps may sample well only at that
length: longer chains can drift off the data (Nijkamp et al. 2019, "On the Anatomy of
MCMC-based Maximum Likelihood Learning of Energy-Based Models"). `config.chain_length_factors`
(e.g. `(1, 3, 10)`) names the lengths, in multiples of `mcmc_steps`, at which the final
metrics (`train.final_metrics`) and the evaluation (`evaluate`) score `G(z) + y`. The
chains of the training length are continued, not restarted: `hat` (1x), `hat_3x` and
`hat_10x` are one chain each, read at 1x, 3x and 10x its steps, from the same latents.
"""

import dataclasses
from typing import Dict, Sequence, Tuple

import jax

from hat_ebm_jax import langevin_programs, sharding


def check_factors(factors: Sequence[int]) -> Tuple[int, ...]:
  """`(1, f2, f3, ...)` as ints, strictly increasing; ValueError naming the key else."""
  try:
    out = tuple(int(f) for f in factors)
  except (TypeError, ValueError):
    out = ()
  if (not out or out[0] != 1 or any(b <= a for a, b in zip(out, out[1:]))
      or any(float(f) != int(f) for f in factors)):
    raise ValueError(f'config.chain_length_factors must be whole multiples of mcmc_steps '
                     f'starting at 1 and increasing, e.g. (1, 3, 10); got {factors!r}.')
  return out


def sample_name(prefix: str, factor: int) -> str:
  """`'hat'` at 1x, `'hat_3x'` at 3x (`prefix` 'hat' or 'hat_ema')."""
  return prefix if factor == 1 else f'{prefix}_{factor}x'


def continue_chains(mode, state, z: jax.Array, y: jax.Array, key: jax.Array,
                    factors: Sequence[int], use_ema: bool, mesh,
                    prefix: str = 'hat') -> Dict[str, jax.Array]:
  """Continues chains that ran `mode.sampler.mcmc_steps` steps and ended at `(z, y)`
  (`[n, ...]`, as `mode.sample(..., with_chains=True)` returns them) to each longer
  length of `factors`. Returns `{sample_name(prefix, f): G(z) + y [n, H, W, C]}` for the
  factors after the first. Runs on concrete arrays (`langevin_programs.sample`: on CPU a
  host loop over one compiled chunk, elsewhere one program per length), the segment to
  factor `f` drawing its noise from `fold_in(key, f)`."""
  factors = check_factors(factors)
  steps = mode.sampler.mcmc_steps
  ebm, gen = mode.ebm_apply_fn(state, use_ema), mode.gen_apply_fn(state, use_ema)
  out, done = {}, 1
  with sharding.use_mesh(mesh):
    for f in factors[1:]:
      sampler = dataclasses.replace(mode.sampler, mcmc_steps=(f - done) * steps)
      r = langevin_programs.sample(ebm, gen, z, y, jax.random.fold_in(key, f), sampler,
                                   backend=mode.platform)
      z, y, done = r.z, r.y, f
      out[sample_name(prefix, f)] = r.images
  return out
