"""What an evaluation's numbers depend on, and where they go: the training-only settings
read from the run (`RUN_KEYS`), the sampler and evaluation settings that `results.json`
records (`sampler_settings`, `evaluation_settings`), and the folder name that says how
they differ from the run's (`default_eval_name`, `eval_dir`: an evaluation never
replaces the numbers of other settings). docs/evaluation.md describes the rules.
"""

import hashlib
import json
from typing import Any, Dict, Optional

from etils import epath

from hat_ebm_jax import langevin, long_run, ood

# Settings of how a run was trained that say nothing about its nets: the evaluation
# reads them from the run's config.json, so `--config.seed=1` need not be repeated.
RUN_KEYS = ('seed', 'batch_size', 'persistent_size', 'num_training_steps', 'ebm_lr_info',
            'gen_lr_info', 'inf_lr_info', 'ebm_opt_decay', 'gen_opt_decay', 'ema_warmup',
            'clip_ebm_grad', 'max_grad_norm', 'gen_loss_factor_coop', 'loss_factor',
            'shuffle_buffer', 'data_epsilon', 'energy_l2', 'nda_frac')
# Sampler keys that do not change the numbers (left out of names and comparisons).
SCHEDULING_KEYS = ('mcmc_unroll',)


def sampler_settings(config, sampler: Optional[langevin.Settings] = None) -> Dict[str, Any]:
  """The sampler of `config` (a ConfigDict or a run's `config.json` dict; `sampler`:
  its `langevin.Settings` when already built, e.g. `mode.sampler`) as `{key: value}`:
  the Langevin settings and the chains' initial scales, without the keys that only
  schedule the work (`SCHEDULING_KEYS`)."""
  sampler = sampler or langevin.Settings.from_config(config)
  out = {k: v for k, v in sampler.to_dict().items() if k not in SCHEDULING_KEYS}
  out.update(init_scale_latent=float(config.get('init_scale_latent', 1.0)),
             init_scale_res=float(config.get('init_scale_res', 0.0)))
  return json.loads(json.dumps(out))


def evaluation_settings(config, sampler: Dict[str, Any]) -> Dict[str, Any]:
  """Everything besides the weights that the numbers of an evaluation depend on, as
  `results.json` records it: the sampler, the sample count and batch, the chain
  lengths, the OOD sets, the metric's inputs and the compute dtype."""
  return json.loads(json.dumps(dict(
      sampler=sampler, eval_seed=int(config.eval_seed),
      num_eval_samples=int(config.num_eval_samples),
      eval_batch_size=int(config.eval_batch_size),
      chain_length_factors=list(long_run.check_factors(config.chain_length_factors)),
      ood_datasets=ood.ood_names(config), ood_split=str(config.ood_split),
      num_ood_samples=int(config.num_ood_samples), dtype=str(config.dtype),
      fid_weights=str(config.fid_weights), fid_stats=str(config.fid_stats),
      split=str(config.split))))


def short_hash(obj) -> str:
  """6 hex digits of the SHA-256 of `obj` as sorted JSON."""
  text = json.dumps(obj, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:6]


def _value_label(v) -> str:
  return f'{v:g}' if isinstance(v, float) else str(v)


def sampler_suffix(sampler: Dict[str, Any], training: Optional[Dict[str, Any]]) -> str:
  """The part of an evaluation's name that says how its sampler differs from the
  training run's: '' when it does not, `_mcmc_steps60` (`_<key><value>` for one or two
  keys), else `_sampler<short_hash>` of the differing keys."""
  if not training:
    return ''
  diffs = sorted(k for k in sampler if k in training and sampler[k] != training[k])
  if not diffs:
    return ''
  if len(diffs) <= 2:
    return ''.join(f'_{k}{_value_label(sampler[k])}' for k in diffs)
  return '_sampler' + short_hash({k: sampler[k] for k in diffs})


def default_eval_name(config, info: Dict, sampler: Optional[Dict[str, Any]] = None) -> str:
  """`<exp_name>_<raw|ema>_step<step>_seed<eval_seed>` (`..._imported_seed<s>`), then
  `sampler_suffix` when the `sampler` (`sampler_settings`) is not the training run's."""
  if info['source'] == 'imported':
    return f'{config.exp_name}_imported_seed{config.eval_seed}'
  return (f'{config.exp_name}_{info["weights"]}_step{info["checkpoint_step"]}_'
          f'seed{config.eval_seed}' +
          sampler_suffix(sampler or {}, info.get('training_sampler')))


def eval_dir(workdir: epath.Path, name: str, settings: Dict[str, Any]) -> epath.Path:
  """`workdir/eval/<name>`, or `<name>_<short_hash(settings)>` when that folder holds
  the results of other settings (an evaluation never replaces another's numbers)."""
  out = workdir / 'eval' / name
  old = out / 'results.json'
  if old.exists():
    try:
      same = json.loads(old.read_text()).get('settings') == settings
    except ValueError:
      same = True  # a results.json cut short by a crash: this evaluation redoes it
    if not same:
      return workdir / 'eval' / f'{name}_{short_hash(settings)}'
  return out
