"""Plan a Cloud TPU run on any machine: compile a config's real step for a TPU slice.

    python -m hat_ebm_jax.plan --config=configs/cifar10_synth.py --topology=v4-8

`topology` (slices and their abstract devices), `programs` (the step and the sampler
loop body on abstract inputs), `hlo` (what the optimized HLO text says, no jax needed)
and `report` (`plan()`, the table, the command). The names below are those callers use.
"""

from hat_ebm_jax.plan.hlo import collective_summary, collectives, cost_dict, shape_bytes
from hat_ebm_jax.plan.programs import Programs, build_mode, eval_programs, train_programs
from hat_ebm_jax.plan.report import format_report, main, plan
from hat_ebm_jax.plan.topology import (GENERATIONS, PlanError, parse_slice, slice_devices,
                                       slice_names)

__all__ = ['GENERATIONS', 'PlanError', 'Programs', 'build_mode', 'collective_summary',
           'collectives', 'cost_dict', 'eval_programs', 'format_report', 'main',
           'parse_slice', 'plan', 'shape_bytes', 'slice_devices', 'slice_names',
           'train_programs']
