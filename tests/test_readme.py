"""Every command in README.md and docs/*.md is exercised, and every documented command line
is checked against the flags of the module it runs.

Two checks:

* **Run.** Each command of a ```bash block of README.md or a docs/*.md page is exercised
  by a test or by `.ci/run`. `COVERAGE` maps each such command (or a stable prefix of it,
  ending at a word boundary) to what exercises it:

  * a test of this module, which runs the command as the page writes it (read from the
    page itself): the same module or script and the same flags, plus only overrides that
    shrink it (fewer steps and samples), temporary paths in place of `runs/...`, and
    `--dry-run` for the launch scripts;
  * an existing test elsewhere in tests/ that runs the same entry point with the same
    flags;
  * `.ci/run`, for the install and test commands, which it runs itself.

  A command without an entry, an entry for no command, or a citation of a test that does
  not exist fails here, so a new documented command needs coverage to pass CI.

* **Flags.** Every `python -m ...` command of those blocks, of the config files' docstrings
  (`configs/*.py`) and of the package's docstrings, and the flags that the launch scripts
  pass on to `hat_ebm_jax.main`, is parsed by its module's own flag parser without running
  (`tests/flag_check.py`): each `--flag` exists, each `--config=configs/x.py[:arg]` loads,
  each `--config.key=value` is a key of that config. The `--config.<key>` a config's
  docstring names are keys of that config, and those the pages name keys of the base
  config.

Commands that need data, files or machines this project cannot have offline (CIFAR-10,
CelebA, ImageNet, pytorch-fid's `.pth`, a TPU pod, SLURM) run as far as they can go
offline: the run with the tfds data_dir (`$TFDS_DATA_DIR`) pointing at an empty folder,
which stops at the dataset with the command that prepares it; the download, stopped before
it starts; the dry run of a launch script.

Each documented command runs in a subprocess of its own (10 to 60 s each on 2 cores), so
the tests that run them are in the slow tier; the quick tier keeps the coverage checks,
the flag checks (one subprocess), the dry runs, and the same entry points (in process, or
one subprocess each) in the other modules (`test_prepare_data`, `test_input_pipeline`,
`test_checkpointing`, `test_fid`, `test_train`).

The digits quickstart, the longest run here, starts in the background as the module starts
and its tests come last: it trains on one core while the other tests use the other.
"""

import ast
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from etils import epath

from tests import flag_check
from tests.conftest import load, snapshot

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, 'README.md')
PAGES = [README, *sorted(glob.glob(os.path.join(REPO, 'docs', '*.md')))]
ALGORITHM = os.path.join(REPO, 'docs', 'algorithm.md')
CI = os.path.join(REPO, '.ci', 'run')
HERE = 'tests/test_readme.py::'
CI_QUICK = '.ci/run: python -m pytest -q -rs --durations=25'
CI_SLOW = '.ci/run: python -m pytest -q -rs -m slow --durations=25'

# Documented command (or a prefix of it, up to a space) -> what exercises it: a test id
# 'tests/<module>.py::<test>' or '.ci/run: <a line .ci/run runs>', or a tuple of them.
COVERAGE = {
    # Quickstart
    'pip install -e .': ".ci/run: python -m pip install -q -e '.[test,tpu]'",  # and extras
    'python -m hat_ebm_jax.main --config=configs/digits.py --workdir=runs/digits':
        HERE + 'test_digits_quickstart_writes_what_the_docs_list',
    'python -m hat_ebm_jax.main --config=configs/digits.py --workdir=runs/digits_decay':
        'tests/test_configs.py::test_learning_rate_schedules_can_be_given_on_the_command_line',
    "pip install -e '.[test,tpu]'": ".ci/run: python -m pip install -q -e '.[test,tpu]'",
    'python -m pytest -q': CI_QUICK,
    'python -m pytest -q -m slow': CI_SLOW,
    # Modes and configs: datasets, retrofit
    'python -m hat_ebm_jax.prepare_data --dataset=cifar10':
        HERE + 'test_preparing_cifar10_goes_straight_to_the_download',
    'python -m hat_ebm_jax.prepare_data --dataset=celeb_a':
        HERE + 'test_preparing_from_an_empty_manual_dir_lists_the_files_to_download',
    'python -m hat_ebm_jax.prepare_data --dataset=imagenet2012':
        HERE + 'test_preparing_from_an_empty_manual_dir_lists_the_files_to_download',
    'python -m hat_ebm_jax.main --config=configs/cifar10_ae.py':
        HERE + 'test_cifar10_autoencoder_stops_at_the_unprepared_dataset',
    'python -m hat_ebm_jax.main --config=configs/cifar10_retrofit.py': (
        HERE + 'test_retrofit_loads_the_autoencoder_workdir_and_stops_only_at_the_dataset',
        # the chain trained end to end (configs/tiny.py, in process)
        'tests/test_train.py::'
        'test_autoencoder_trains_with_a_test_loss_and_its_decoder_drives_retrofit'),
    # Importing the authors' released checkpoints
    'python -m hat_ebm_jax.pretrained': (
        HERE + 'test_converted_generator_is_loaded_by_the_refine_command',
        # the same CLI on a checkpoint written by the authors' TF code (conformance data)
        'tests/test_checkpointing.py::test_convert_cli_writes_weights_that_joint_mode_loads'),
    'python -m hat_ebm_jax.main --config=configs/cifar10_refine.py':
        HERE + 'test_converted_generator_is_loaded_by_the_refine_command',
    # Scaling
    'launch/tpu_pod.sh': HERE + 'test_tpu_pod_dry_run_prints_every_step_of_the_run',
    'sbatch --nodes=4 launch/slurm_gpu.sbatch':
        HERE + 'test_slurm_dry_run_prints_the_srun_command',
    'launch/local_multiprocess.sh -n 2 -d 2 --': (
        # the same flags, configs/tiny.py, run for real: preempted, resumed, compared
        'tests/test_scaling.py::test_two_processes_preempt_resume_and_match_one_process',
        'tests/test_scaling.py::test_launch_scripts_print_their_commands_with_dry_run'),
    # Planning a TPU run without a TPU
    "pip install -e '.[tpu]'": ".ci/run: python -m pip install -q -e '.[test,tpu]'",
    'python -m hat_ebm_jax.plan': (
        'tests/test_plan.py::test_the_cli_reports_a_step_that_does_not_fit_with_its_largest_buffers',
        'tests/test_plan.py::test_cifar10_synthesis_fits_a_v4_8_with_one_gradient_all_reduce_per_update',
        'tests/test_plan.py::test_the_evaluation_sampler_plans_with_the_eval_configs_settings'),
    # 2D toys
    'python -m hat_ebm_jax.main --config=configs/toy2d.py --workdir=runs/toy_synth':
        'tests/test_toy.py::test_synthesis_on_points_writes_samples_plots_and_mmds',
    'python -m hat_ebm_jax.toy --config=configs/toy2d.py:refine':
        'tests/test_toy.py::test_weak_generator_cli_feeds_refinement',
    'python -m hat_ebm_jax.main --config=configs/toy2d.py:refine':
        'tests/test_toy.py::test_weak_generator_cli_feeds_refinement',
    # Benchmarks (the same command with --smoke: tiny nets, 2 steps)
    'python -m benchmarks.langevin': 'tests/test_benchmarks.py::test_smoke_reports_every_bench',
    'python -m benchmarks.ood_checkpoints --workdir=runs/digits':
        'tests/test_evaluate.py::'
        'test_ood_over_checkpoints_gives_each_step_the_evaluations_aurocs_and_their_average',
    'python -m benchmarks.paper_digits':
        'tests/test_paper_digits.py::test_the_suite_runs_every_stage_resumes_and_writes_the_table',
    'python -m benchmarks.tf_reference':
        'tests/test_tf_reference.py::test_smoke_prints_well_formed_lines',
    'python -m benchmarks.mixed_precision':
        'tests/test_benchmarks.py::test_precision_smoke_trains_digits_in_both_dtypes',
    # Evaluation
    'python -m hat_ebm_jax.main --config=configs/digits.py:eval --workdir=runs/digits':
        HERE + 'test_digits_evaluation_writes_results_comparison_and_ood_tables',
    'python -m hat_ebm_jax.fid.convert_weights': (
        HERE + 'test_fid_weight_conversion_without_the_pth_says_where_to_get_it',
        # the conversion itself, same main() and flags, on a synthetic state dict (.npz)
        'tests/test_fid.py::test_converter_round_trip_on_a_synthetic_state_dict'),
}

# Only overrides that shrink a run: a handful of steps, chains and samples.
DIGITS_TRAIN = dict(num_training_steps=2, mcmc_steps=2, plot_freq=2, num_final_samples=64)
DIGITS_EVAL = dict(mcmc_steps=2, num_eval_samples=128, num_ood_samples=64)


# ------------------------------------------------------------------ documented commands


def parse_commands(markdown: str):
  """The commands of the ```bash blocks of `markdown`: `\\` continuations joined, comment
  lines skipped, `a && b` split, whitespace collapsed."""
  commands = []
  for block in re.findall(r'^```bash\n(.*?)^```', markdown, re.M | re.S):
    text = re.sub(r'\\\n', ' ', block)
    for line in text.splitlines():
      line = line.strip()
      if not line or line.startswith('#'):
        continue
      commands += [' '.join(c.split()) for c in re.split(r'\s&&\s', line) if c.strip()]
  return commands


def page_commands():
  """`{page: its ```bash commands}` for README.md and every docs/*.md page."""
  out = {}
  for page in PAGES:
    with open(page) as f:
      out[os.path.relpath(page, REPO)] = parse_commands(f.read())
  return out


def doc_commands():
  """The ```bash commands of README.md and docs/*.md, in page order."""
  return [c for commands in page_commands().values() for c in commands]


def starts(command: str, prefix: str) -> bool:
  return command == prefix or command.startswith(prefix + ' ')


def covering(command: str):
  """The COVERAGE key of `command`: its longest matching prefix (None if none)."""
  keys = [k for k in COVERAGE if starts(command, k)]
  return max(keys, key=len) if keys else None


def doc_argv(prefix: str):
  """The argv of the one documented command that starts with `prefix` (several identical
  copies, on one page or several, count as one)."""
  found = sorted({c for c in doc_commands() if starts(c, prefix)})
  assert len(found) == 1, f'the pages have {len(found)} commands starting {prefix!r}: {found}'
  return shlex.split(found[0])


def with_flags(argv, **values):
  """`argv` with the values of its `--<flag>=` flags replaced (`config_gen_weights` names
  `--config.gen_weights`); each flag must be in `argv`."""
  argv = list(argv)
  for name, value in values.items():
    flag = '--' + name.replace('config_', 'config.', 1) + '='
    at = [i for i, a in enumerate(argv) if a.startswith(flag)]
    assert len(at) == 1, (flag, argv)
    argv[at[0]] = f'{flag}{value}'
  return argv


def python(argv, **overrides):
  """A documented `python -m ...` argv run with this interpreter, `--config.<k>=<v>` added."""
  assert argv[0] == 'python', argv
  return [sys.executable, *argv[1:], *[f'--config.{k}={v}' for k, v in overrides.items()]]


def env(**extra):
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONUNBUFFERED='1',
              PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''), **extra)


def run(argv, cwd=REPO, **extra_env):
  return subprocess.run(argv, cwd=cwd, env=env(**extra_env), capture_output=True,
                        text=True, timeout=900)


def check_ok(p):
  assert p.returncode == 0, f'{p.args} failed ({p.returncode}):\n{p.stderr[-4000:]}'
  return p


def test_parser_joins_continuations_skips_comments_and_splits_and():
  """Only ```bash blocks count; inline code and other languages do not."""
  markdown = ('text `python -m not_this`\n```bash\n# a comment\npip install -e . && '
              'python -m a --x=1 \\\n    --y=2\n\n```\n```python\nprint(1)\n```\n'
              '```bash\nb  -n 2\n```\n')
  assert parse_commands(markdown) == ['pip install -e .', 'python -m a --x=1 --y=2',
                                      'b -n 2']


def test_every_documented_command_is_covered():
  """A command of README.md or docs/*.md without a COVERAGE entry fails: add a test, or
  cite one."""
  pages = page_commands()
  assert len(pages['README.md']) >= 4 and len(doc_commands()) >= 25, pages  # blocks found
  missing = [(page, c) for page, commands in pages.items() for c in commands
             if covering(c) is None]
  assert not missing, ('documented commands without an entry in tests/test_readme.py '
                       f'COVERAGE: {missing}')


def test_every_coverage_entry_is_a_documented_command():
  """An entry left over from a command no page has any more fails."""
  commands = doc_commands()
  stale = [k for k in COVERAGE if not any(covering(c) == k for c in commands)]
  assert not stale, f'COVERAGE entries that match no documented command: {stale}'


def functions_of(path):
  """The names of the module-level functions of `path` (read, not imported)."""
  with open(os.path.join(REPO, path)) as f:
    tree = ast.parse(f.read())
  return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_every_cited_test_exists_and_ci_runs_what_is_cited():
  """Each cited test is a function of its module, and each `.ci/run` citation a line
  that `.ci/run` runs."""
  with open(CI) as f:
    ci_lines = [l.strip() for l in f if l.strip() and not l.lstrip().startswith('#')]
  for key, how in COVERAGE.items():
    for cite in (how,) if isinstance(how, str) else how:
      if cite.startswith('.ci/run: '):
        assert cite[len('.ci/run: '):] in ci_lines, (key, cite)
        continue
      path, name = cite.split('::')
      assert re.fullmatch(r'tests/test_\w+\.py', path) and name.startswith('test_'), cite
      assert name in functions_of(path), f'{cite} (for {key!r}) does not exist'


# ------------------------------------------------------------------ flags of every command line

# Where documented command lines live besides the pages' ```bash blocks: the docstrings of
# the config files (the ones a user reads first), of the package and of the benchmarks.
DOCSTRING_SOURCES = ('configs/*.py', 'hat_ebm_jax/**/*.py', 'benchmarks/*.py')

# Command lines the checker must refuse, each as a user running it would be refused (the
# first is what configs/toy2d.py's docstring once said).
REFUSED = {
    'python -m hat_ebm_jax.toy --dataset=eight_gaussians --out=/tmp/weak_gen':
        "Unknown command line flag 'dataset'",
    'python -m hat_ebm_jax.main --config=configs/digits.py --workdir=w --config.mcmc_stepz=2':
        'mcmc_stepz',
    'python -m hat_ebm_jax.main --config=configs/digits.py --workdir=w --config.mcmc_steps=x':
        'mcmc_steps',
    'python -m hat_ebm_jax.main --config=configs/nope.py --workdir=w': 'configs/nope.py',
    'python -m hat_ebm_jax.main --config=configs/digits.py:evil --workdir=w':
        "Unknown config argument 'evil'",
    'python -m hat_ebm_jax.main --config=configs/digits.py': '--workdir',
    'python -m benchmarks.langevin --batchsize=16': 'unrecognized arguments: --batchsize=16',
    'python -m hat_ebm_jax.fid.convert_weights --pth=a.pth': '--out',
    'python -m hat_ebm_jax.prepare_data --dataset=NAME [--manual_dir=DIR] [--datadir=DIR]':
        'unknown flags: --datadir',
    'launch/local_multiprocess.sh -n 2 -d 2 -- --config=configs/tiny.py --work_dir=/tmp/mp':
        "Unknown command line flag 'work_dir'",
}


def docstrings_of(path):
  """The docstrings of `path`: its module's, its classes' and its functions'."""
  with open(os.path.join(REPO, path)) as f:
    tree = ast.parse(f.read())
  kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
  return [d for n in ast.walk(tree) if isinstance(n, kinds) for d in [ast.get_docstring(n)]
          if d]


def docstring_commands(path):
  """The `python -m ...` lines of the docstrings of `path`, `\\` continuations joined."""
  commands = []
  for doc in docstrings_of(path):
    for line in re.sub(r'\\\n', ' ', doc).splitlines():
      if line.strip().startswith('python -m '):
        commands.append(' '.join(line.split()))
  return commands


def docstring_files():
  return sorted({os.path.relpath(p, REPO) for pattern in DOCSTRING_SOURCES
                 for p in glob.glob(os.path.join(REPO, pattern), recursive=True)})


def documented_command_lines():
  """`{command: where}` for every command line the flag check covers: the pages' ```bash
  commands that run a module or a launch script, and the docstrings' `python -m` lines."""
  where = {}
  for page, commands in page_commands().items():
    for c in commands:
      if flag_check.main_argv(c) is not None:
        where.setdefault(c, page)
  for path in docstring_files():
    for c in docstring_commands(path):
      where.setdefault(c, path)
  return where


@pytest.fixture(scope='module')
def flag_results():
  """Every documented command line and every REFUSED one through `flag_check` (one
  subprocess)."""
  return flag_check.check([*documented_command_lines(), *REFUSED])


def test_every_documented_command_line_parses_with_its_modules_flags(flag_results):
  """Each `python -m` command of the pages, the config docstrings and the package's
  docstrings (and each launch script's flags for `hat_ebm_jax.main`) parses with the
  flags its module defines: no unknown flag, the config file loads, its overrides are
  keys of that config."""
  where = documented_command_lines()
  in_configs = [c for p in docstring_files() if p.startswith('configs/')
                for c in docstring_commands(p)]
  assert len(where) >= 30 and len(in_configs) >= 6, where  # pages and docstrings were read
  assert set(where) <= set(flag_results)
  bad = {f'{where[c]}: {c}': flag_results[c] for c in where if flag_results[c] is not None}
  assert not bad, f'documented commands that their module refuses: {bad}'


@pytest.mark.parametrize('command', sorted(REFUSED))
def test_the_flag_check_refuses_what_the_module_refuses(flag_results, command):
  """A wrong flag, an unknown or mistyped config key, a missing config file or argument,
  a missing required flag, a wrong flag in a usage synopsis or behind a launch script:
  each is refused, naming it."""
  assert flag_results[command] is not None, command
  assert REFUSED[command] in flag_results[command], flag_results[command]


def config_keys():
  """`{configs/x.py: the keys of its config}` (every `:arg` variant has the same keys)."""
  return {f'configs/{os.path.basename(p)}': set(load(os.path.basename(p)[:-3]).keys())
          for p in sorted(glob.glob(os.path.join(REPO, 'configs', '*.py')))}


def test_every_config_key_a_docstring_or_page_names_exists():
  """`--config.<key>` in a config file's docstring is a key of that config; on a page, in
  a package docstring or in a config comment, a key of the base config."""
  import warnings  # pylint: disable=g-import-not-at-top
  from hat_ebm_jax import config_lib  # pylint: disable=g-import-not-at-top
  base = set(config_lib.base_config().keys())
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', DeprecationWarning)  # configs/eval_*.py
    per_config = config_keys()
  bad = []
  for path in docstring_files():
    keys = per_config.get(path, base)
    text = '\n'.join(docstrings_of(path))
    bad += [(path, k) for k in re.findall(r'--config\.(\w+)', text) if k not in keys]
  for page in PAGES:
    with open(page) as f:
      text = f.read()
    bad += [(os.path.relpath(page, REPO), k)
            for k in re.findall(r'--config\.(\w+)', text) if k not in base]
  assert not bad, f'--config.<key> of no config: {bad}'


# ------------------------------------------------------------------ the pages themselves


def sections(path=ALGORITHM):
  """The section numbers of docs/algorithm.md (`## §n ...` headings)."""
  with open(path) as f:
    return {int(n) for n in re.findall(r'^## §(\d+) ', f.read(), re.M)}


def cited_sections(text):
  """The section numbers `text` cites as `docs/algorithm.md §n` (or `§n, §m`, `§n-m`)."""
  out = []
  for run in re.findall(r'algorithm\.md\)? ((?:§\d+(?:-\d+)?(?:,? (?:and )?)?)+)', text):
    for a, b in re.findall(r'§(\d+)(?:-(\d+))?', run):
      out += list(range(int(a), int(b or a) + 1))
  return out


def repository_texts():
  """`{path: text}` of every file under hat_ebm_jax/, configs/, benchmarks/, launch/ and
  docs/, and README.md (text files only)."""
  out = {}
  for root in ('hat_ebm_jax', 'configs', 'benchmarks', 'launch', 'docs'):
    for d, _, files in os.walk(os.path.join(REPO, root)):
      for name in files:
        path = os.path.join(d, name)
        try:
          with open(path, encoding='utf-8') as f:
            out[os.path.relpath(path, REPO)] = f.read()
        except UnicodeDecodeError:
          continue  # the grids' PNGs, compiled files
  with open(README) as f:
    out['README.md'] = f.read()
  return out


def test_the_docs_cite_no_spec():
  """The package, configs, benchmarks, launch scripts and pages cite docs/algorithm.md, not
  a document outside the repository; every section they cite exists."""
  assert sections() == set(range(1, len(sections()) + 1)) and len(sections()) >= 9
  texts = repository_texts()
  assert 'hat_ebm_jax/langevin.py' in texts and 'docs/algorithm.md' in texts
  outside = [p for p, t in texts.items() if re.search(r'\bSPEC\b|\.\./shared', t)]
  assert not outside, f'files that cite SPEC or ../shared: {outside}'
  cites = {p: cited_sections(t) for p, t in texts.items()}
  assert sum(map(len, cites.values())) >= 40, cites  # the citations were found
  missing = {p: sorted(set(c) - sections()) for p, c in cites.items() if set(c) - sections()}
  assert not missing, f'citations of sections docs/algorithm.md does not have: {missing}'


def test_the_algorithm_page_places_every_config_key():
  """docs/algorithm.md's last section names every key of the base config."""
  from hat_ebm_jax import config_lib  # pylint: disable=g-import-not-at-top
  with open(ALGORITHM) as f:
    table = f.read().split('Where each config key acts', 1)[1]
  named = set(re.findall(r'`(\w+)`', table))
  assert not set(config_lib.base_config().keys()) - named


def test_the_readme_is_short_and_its_links_resolve():
  """README.md stays an overview (200 lines at most) whose results section reports
  measured figures over seeds 0-4 (a table, the suite that makes them, sample grids), and
  every relative link of README.md and docs/*.md names a file of the repository."""
  with open(README) as f:
    readme = f.read()
  assert len(readme.splitlines()) <= 200
  results = readme.split('## Results on the offline default\n', 1)[1].split('\n## ', 1)[0]
  assert 'seeds 0-4' in results and 'benchmarks.paper_digits' in results
  table = [line for line in results.splitlines() if line.startswith('|')]
  rows = table[2:]  # under the header and its rule
  assert len(rows) >= 6 and all(re.search(r'\d\.\d', row) for row in rows), rows
  assert 'src="docs/images/' in results and '<!--' not in results
  assert 'What changed' not in readme
  broken = []
  for page in PAGES:
    with open(page) as f:
      text = f.read()
    for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)|src="([^"]+)"', text):
      target = next(x for x in target if x)
      if '://' in target:
        continue
      if not os.path.exists(os.path.join(os.path.dirname(page), target)):
        broken.append((os.path.relpath(page, REPO), target))
  assert not broken, broken


# ------------------------------------------------------------------ datasets


@pytest.fixture(scope='module')
def empty_tfds(tmp_path_factory):
  """An empty tfds data_dir: `$TFDS_DATA_DIR` for commands whose data cannot be had here."""
  return tmp_path_factory.mktemp('tfds_empty')


DEAD_PROXY = 'http://127.0.0.1:9'  # refuses connections: nothing reaches the network


@pytest.mark.slow
def test_preparing_cifar10_goes_straight_to_the_download(empty_tfds):
  """CIFAR-10 needs no files by hand: the command goes to the tfds default data_dir
  (`$TFDS_DATA_DIR`) and starts downloading; it is stopped there (behind a proxy that
  refuses connections, so nothing is downloaded)."""
  argv = doc_argv('python -m hat_ebm_jax.prepare_data --dataset=cifar10')
  proxies = {k: DEAD_PROXY for k in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY',
                                     'http_proxy', 'https_proxy', 'all_proxy')}
  proc = subprocess.Popen(python(argv), cwd=REPO,
                          env=env(TFDS_DATA_DIR=str(empty_tfds), NO_PROXY='', no_proxy='',
                                  **proxies),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  watchdog = threading.Timer(300, proc.kill)
  watchdog.start()
  seen = []
  try:
    for line in proc.stdout:
      seen.append(line)
      if line.startswith('Preparing cifar10 into'):
        break
  finally:
    watchdog.cancel()
    proc.kill()
    proc.communicate()
  assert seen and seen[-1].startswith(f'Preparing cifar10 into {empty_tfds}/cifar10'), (
      ''.join(seen)[-3000:])
  assert '(downloading)' in seen[-1]
  assert not list(empty_tfds.rglob('dataset_info.json'))


@pytest.mark.slow
@pytest.mark.parametrize('dataset', ['celeb_a', 'imagenet2012'])
def test_preparing_from_an_empty_manual_dir_lists_the_files_to_download(dataset,
                                                                         tmp_path):
  """`--manual_dir=DIR` without the hand-downloaded files stops, naming each missing file
  (docs/training.md's list for the dataset) before any network access, and writes nothing."""
  argv = doc_argv(f'python -m hat_ebm_jax.prepare_data --dataset={dataset}')
  manual, tfds_dir = tmp_path / 'DIR', tmp_path / 'tfds'
  manual.mkdir()
  p = run(python(with_flags(argv, manual_dir=manual)), TFDS_DATA_DIR=str(tfds_dir))
  assert p.returncode != 0
  wanted = {'celeb_a': ['img_align_celeba.zip', 'list_eval_partition.txt',
                        'list_attr_celeba.txt', 'list_landmarks_align_celeba.txt',
                        'identity_CelebA.txt'],
            'imagenet2012': ['ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar']}[dataset]
  assert f'--manual_dir={manual} lacks {", ".join(wanted)} for {dataset}' in p.stderr
  assert 'Traceback' not in p.stderr
  assert list(manual.iterdir()) == []
  assert not tfds_dir.exists() or not any(f for _, _, f in os.walk(tfds_dir))


def run_unprepared(argv, empty_tfds):
  """Runs a documented training command with the tfds default data_dir empty."""
  return run(python(argv), TFDS_DATA_DIR=str(empty_tfds))


def assert_stops_at_cifar10(p):
  assert p.returncode != 0
  assert "error: Dataset 'cifar10' is not prepared" in p.stderr, (
      p.stderr[-3000:])
  # ... with the documented command that prepares it
  assert 'python -m hat_ebm_jax.prepare_data --dataset=cifar10\n' in p.stderr
  assert 'python -m hat_ebm_jax.prepare_data --dataset=cifar10' in doc_commands()


@pytest.fixture(scope='module')
def autoencoder_attempt(tmp_path_factory, empty_tfds):
  """The documented `configs/cifar10_ae.py` command, as written, without CIFAR-10."""
  workdir = tmp_path_factory.mktemp('runs') / 'ae'
  argv = doc_argv('python -m hat_ebm_jax.main --config=configs/cifar10_ae.py')
  return run_unprepared(with_flags(argv, workdir=workdir), empty_tfds), workdir


@pytest.mark.slow
def test_cifar10_autoencoder_stops_at_the_unprepared_dataset(autoencoder_attempt):
  """A dataset that is not prepared stops the run with the command that prepares it."""
  assert_stops_at_cifar10(autoencoder_attempt[0])


@pytest.mark.slow
def test_an_unprepared_dataset_stops_the_run_before_anything_is_written(
    autoencoder_attempt):
  """The missing dataset is found before the workdir is created."""
  p, workdir = autoencoder_attempt
  assert p.returncode != 0
  assert not workdir.exists(), sorted(str(x.relative_to(workdir))
                                      for x in workdir.rglob('*'))


@pytest.fixture(scope='module')
def autoencoder_workdir(tmp_path_factory):
  """What `runs/ae` holds once `configs/cifar10_ae.py` saved a checkpoint (here its step
  0, written as train.run writes it; training it needs CIFAR-10)."""
  from hat_ebm_jax import checkpointing, modes  # pylint: disable=g-import-not-at-top
  workdir = epath.Path(tmp_path_factory.mktemp('runs') / 'ae')
  c = load('cifar10_ae')
  state = modes.create(c).init_state(jax.random.PRNGKey(c.seed))
  checkpointing.write_workdir_config(workdir, c)
  manager = checkpointing.create_manager(workdir, c.keep_checkpoints)
  checkpointing.save(manager, 0, state)
  manager.wait_until_finished()
  manager.close()
  return workdir


@pytest.mark.slow
def test_retrofit_loads_the_autoencoder_workdir_and_stops_only_at_the_dataset(
    autoencoder_workdir, empty_tfds, tmp_path):
  """`configs/cifar10_retrofit.py` with `--config.gen_weights=` the autoencoder's workdir
  takes its decoder as the generator (weights that do not fit, or no weights, would stop
  it first) and stops only at the dataset."""
  argv = doc_argv('python -m hat_ebm_jax.main --config=configs/cifar10_retrofit.py')
  argv = with_flags(argv, workdir=tmp_path / 'retrofit',
                    config_gen_weights=autoencoder_workdir)
  assert_stops_at_cifar10(run_unprepared(argv, empty_tfds))


# ------------------------------------------------------------------ imported checkpoints


def write_tf_checkpoint(prefix: str, variables) -> None:
  """Writes Flax `variables` as a TF object-based checkpoint with the original code's
  names (the inverse of `convert.tf_to_flax`)."""
  import flax  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  leaf_names = {('params', 'kernel'): 'kernel', ('params', 'scale'): 'gamma',
                ('batch_stats', 'mean'): 'moving_mean',
                ('batch_stats', 'var'): 'moving_variance'}
  tree = {}
  for (collection, *path, leaf), value in flat.items():
    if (collection, leaf) == ('params', 'bias'):  # batch norm beta, else a layer's bias
      name = 'beta' if (collection, *path, 'scale') in flat else 'bias'
    else:
      name = leaf_names[collection, leaf]
    node = tree
    for part in path:
      node = node.setdefault(part, {})
    node[name] = tf.Variable(np.asarray(value))

  def trackable(node):
    return tf.train.Checkpoint(**{k: trackable(v) if isinstance(v, dict) else v
                                  for k, v in node.items()})

  trackable(tree).write(prefix)


@pytest.mark.slow
def test_converted_generator_is_loaded_by_the_refine_command(empty_tfds, tmp_path):
  """The documented conversion command turns a TF SN-GAN checkpoint (here one at the width of
  `configs/cifar10_refine.py`) into `weights/sngan32`, and the refine command loads it as
  its generator and stops only at the dataset."""
  from hat_ebm_jax import models  # pylint: disable=g-import-not-at-top
  prefix, out = tmp_path / 'gen' / 'ckpt', tmp_path / 'weights' / 'sngan32'
  config = load('cifar10_refine')
  write_tf_checkpoint(str(prefix), models.init_variables(
      models.create(config.gen_type, ngf=config.gen_ngf, nz=config.z_sz),
      jax.random.PRNGKey(0)))
  argv = doc_argv('python -m hat_ebm_jax.pretrained')
  p = check_ok(run(python(with_flags(argv, tf_checkpoint=prefix, out=out))))
  assert f'Wrote gen_sngan32 (4,276,739 trainable parameters) to {out}' in p.stdout
  net = json.loads((out / 'net.json').read_text())
  assert net['net'] == 'gen_sngan32'
  assert net['kwargs']['out_factor'] == 1.0 == config.gen_factor
  argv = doc_argv('python -m hat_ebm_jax.main --config=configs/cifar10_refine.py')
  argv = with_flags(argv, workdir=tmp_path / 'refine', config_gen_weights=out)
  assert_stops_at_cifar10(run_unprepared(argv, empty_tfds))


# ------------------------------------------------------------------ FID weights


@pytest.mark.slow
def test_fid_weight_conversion_without_the_pth_says_where_to_get_it(tmp_path):
  """Without pytorch-fid's `.pth` the command stops naming where to get it, and writes
  nothing; with the `.pth` but without torch (not a dependency) it says to install torch
  or to bring the state dict as an `.npz`."""
  from hat_ebm_jax.fid import inception  # pylint: disable=g-import-not-at-top
  argv = python(doc_argv('python -m hat_ebm_jax.fid.convert_weights'))
  p = run(argv, cwd=tmp_path)
  assert p.returncode != 0
  assert 'No state dict at' in p.stderr and inception.WEIGHTS_URL in p.stderr
  assert list(tmp_path.iterdir()) == []
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    return  # a real conversion needs the real file
  except ImportError:
    pass
  (tmp_path / 'pt_inception-2015-12-05-6726825d.pth').write_bytes(b'not a state dict')
  p = run(argv, cwd=tmp_path)
  assert p.returncode != 0
  assert 'needs torch' in p.stderr and '.npz' in p.stderr
  assert [x.name for x in tmp_path.iterdir()] == ['pt_inception-2015-12-05-6726825d.pth']


# ------------------------------------------------------------------ launch scripts


def dry_run(argv):
  """Runs a documented launch command with `--dry-run` right after the script."""
  return subprocess.run([argv[0], '--dry-run', *argv[1:]], cwd=REPO, env=env(),
                        capture_output=True, text=True, timeout=60)


def test_tpu_pod_dry_run_prints_every_step_of_the_run():
  """Create the slice, copy and install, train on all workers with `--multihost`, fetch
  the logs, delete it; the main flags reach every worker unchanged."""
  argv = doc_argv('launch/tpu_pod.sh')
  p = dry_run(argv)
  assert p.returncode == 0, p.stderr
  out = p.stdout.replace('\\', '')
  steps = ['tpu-vm create', '--accelerator-type=v4-32', 'git', 'archive', 'tpu-vm scp',
           'pip install', 'python3 -m hat_ebm_jax.main', '--multihost', 'train.log',
           'tpu-vm delete']
  at = [out.find(s) for s in steps]
  assert -1 not in at and at == sorted(at), dict(zip(steps, at))
  main_flags = argv[argv.index('--') + 1:]
  assert main_flags and all(f in out for f in main_flags), (main_flags, out)


def test_slurm_dry_run_prints_the_srun_command():
  """`launch/slurm_gpu.sbatch` (what sbatch runs on the first node; sbatch's own options
  go to SLURM) prints `srun ... python -m hat_ebm_jax.main` with the documented flags."""
  argv = doc_argv('sbatch --nodes=4 launch/slurm_gpu.sbatch')
  script = next(i for i, a in enumerate(argv) if a.endswith('.sbatch'))
  assert all(a.startswith('--') for a in argv[1:script])  # sbatch options only
  p = dry_run(argv[script:])
  assert p.returncode == 0, p.stderr
  assert p.stdout.startswith('+ srun --kill-on-bad-exit=1')
  assert ' -m hat_ebm_jax.main ' + ' '.join(argv[script + 1:]) in p.stdout


# ------------------------------------------------------------------ quickstart: digits


@pytest.fixture(scope='module', autouse=True)
def digits_in_background(request, tmp_path_factory):
  """Starts the quickstart's digits run (DIGITS_TRAIN's 2 steps, a temporary workdir) as
  this module starts, when a selected test needs it: it trains on one core while the
  other tests use the other. Yields `(process, workdir, log)` or None."""
  if not any(getattr(item, 'module', None) is request.module
             and 'digits_run' in getattr(item, 'fixturenames', ())
             for item in request.session.items):
    yield None
    return
  root = tmp_path_factory.mktemp('runs')
  workdir, log = root / 'digits', root / 'digits.log'
  argv = doc_argv('python -m hat_ebm_jax.main --config=configs/digits.py --workdir=runs/digits')
  with open(log, 'w') as out:
    proc = subprocess.Popen(python(with_flags(argv, workdir=workdir), **DIGITS_TRAIN),
                            cwd=REPO, env=env(), stdout=out, stderr=subprocess.STDOUT)
  yield proc, workdir, log
  if proc.poll() is None:
    proc.kill()
    proc.wait()


@pytest.fixture(scope='module')
def digits_run(digits_in_background):
  """The workdir of the quickstart's digits run, once it has finished."""
  proc, workdir, log = digits_in_background
  rc = proc.wait(timeout=900)
  assert rc == 0, f'{proc.args} failed ({rc}):\n{log.read_text()[-4000:]}'
  return workdir


@pytest.mark.slow
def test_digits_quickstart_writes_what_the_docs_list(digits_run):
  """Summaries, checkpoints, `samples/{hat,gen,data}_*.png`, `samples/final.npz` (float32
  `hat` and `gen`) and `final_metrics.json` with `digits_fd` of the floor, `G(z)` and
  `G(z) + y`; the config as written is 2,250 synthesis steps at 16x16."""
  full = load('digits')
  assert (full.mode, full.num_training_steps, full.image_size) == ('synthesis', 2250, 16)
  assert any(p.name.startswith('events.out.tfevents') for p in digits_run.iterdir())
  assert (digits_run / 'checkpoints' / '2').is_dir()
  samples = digits_run / 'samples'
  for kind in ('hat', 'gen', 'data'):
    assert list(samples.glob(f'{kind}_*.png')), kind
  with np.load(samples / 'final.npz') as final:
    for kind in ('hat', 'gen'):
      x = final[kind]
      assert x.dtype == np.float32 and x.shape == (64, 16, 16, 1), kind
      assert np.all(np.isfinite(x)), kind
  metrics = json.loads((digits_run / 'final_metrics.json').read_text())
  # at least these three (issue 22 adds longer chains and the EMA weights beside them)
  assert {'digits_fd_floor', 'digits_fd_gen', 'digits_fd_hat'} <= set(metrics)
  assert 0 < metrics['digits_fd_floor'] < 10  # held-out real digits (docs/training.md: 4.05)
  assert all(np.isfinite(v) for v in metrics.values())


@pytest.mark.slow
def test_digits_evaluation_writes_results_comparison_and_ood_tables(digits_run):
  """`configs/digits.py:eval` on the quickstart's workdir writes grids, samples,
  `results.json`, `comparison.md` and `ood.md` to `WORKDIR/eval/<name>/`, and leaves the
  training checkpoints untouched."""
  before = snapshot(digits_run / 'checkpoints')
  argv = doc_argv('python -m hat_ebm_jax.main --config=configs/digits.py:eval')
  check_ok(run(python(with_flags(argv, workdir=digits_run), **DIGITS_EVAL)))
  assert snapshot(digits_run / 'checkpoints') == before
  out = digits_run / 'eval' / 'eval_digits_raw_step2_seed0'
  for name in ('hat.png', 'gen.png', 'samples.npz', 'results.json', 'comparison.md',
               'ood.md'):
    assert (out / name).stat().st_size > 0, name
  results = json.loads((out / 'results.json').read_text())
  assert results['sampling']['seed'] == 0
  assert results['sampling']['num_samples'] == 128
  assert results['sampling']['label'] == 'proxy_128'
  assert results['sampling']['sampler']['mcmc_steps'] == 2
  assert (results['reference']['dataset'], results['reference']['size']) == ('digits', 1497)
  assert (results['model']['weights'], results['model']['checkpoint_step']) == ('raw', 2)
  assert {'digits_fd_floor', 'digits_fd_gen', 'digits_fd_hat', 'ood_auroc_noise',
          'ood_auroc_shuffled', 'ood_auroc_inverted'} <= set(results['metrics'])
  assert 'G(z) + y' in (out / 'comparison.md').read_text()
  ood = (out / 'ood.md').read_text()
  assert all(name in ood for name in ('noise', 'shuffled', 'inverted'))
