"""`python -m hat_ebm_jax.plan --config=... --topology=v4-8` (see `plan.report`)."""

import sys

from hat_ebm_jax.plan import report

if __name__ == '__main__':
  sys.exit(report.main())
