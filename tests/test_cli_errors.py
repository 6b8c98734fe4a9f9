"""A user's mistake at the command line is one line on stderr, what is wrong and what to
do, with exit code 2 and no traceback; an internal error keeps its traceback, and
`--verbose` shows every traceback.

The wrapper and the messages are tested in-process; a few real commands (each pays the
imports of a fresh interpreter) check the entry points end to end, the expensive ones in
the slow tier. The troubleshooting table (docs/troubleshooting.md) is checked against the
sources.
"""

import os
import re
import subprocess
import sys

import pytest
from absl import flags

from hat_ebm_jax import checkpointing, cli, config_lib, train
from tests.conftest import load

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(main, argv, capsys):
  """`cli.run(main)` on `argv` in-process: (exit code, stderr)."""
  try:
    cli.run(main, argv=['prog', *argv])
    code = 0
  except SystemExit as e:
    code = e.code
  return code, capsys.readouterr().err


def raising(exc):
  def main(argv):
    del argv
    raise exc
  return main


def test_a_user_error_is_one_line_with_exit_code_2(capsys):
  code, err = run_cli(raising(cli.UserError('--workdir=x is a file; pass a directory.')),
                      [], capsys)
  assert code == cli.EXIT_USER_ERROR == 2
  assert err == 'error: --workdir=x is a file; pass a directory.\n'


def test_an_internal_error_keeps_its_traceback(capsys):
  with pytest.raises(ZeroDivisionError):
    run_cli(raising(ZeroDivisionError('bug')), [], capsys)


def test_verbose_shows_the_traceback_of_a_user_error(capsys):
  with pytest.raises(cli.UserError):
    run_cli(raising(cli.UserError('bad')), ['--verbose'], capsys)
  flags.FLAGS.unparse_flags()


def test_a_user_error_keeps_its_type_for_callers_that_catch_it():
  e = cli.user_error(ValueError('config.batch_size=12 does not divide'))
  assert isinstance(e, ValueError) and isinstance(e, cli.UserError)
  assert str(e) == 'config.batch_size=12 does not divide'
  e = cli.user_error(FileNotFoundError('No pretrained weights at x'))
  assert isinstance(e, FileNotFoundError) and isinstance(e, cli.UserError)
  with pytest.raises(KeyError) as info:
    with cli.user_errors(KeyError):
      raise KeyError('only this type')
  assert isinstance(info.value, cli.UserError)
  with pytest.raises(TypeError) as info:  # other types pass through untouched
    with cli.user_errors(KeyError):
      raise TypeError('internal')
  assert not isinstance(info.value, cli.UserError)


def test_a_message_of_several_lines_keeps_its_list_indented():
  e = checkpointing.ConfigMismatchError('Workdir w holds checkpoints of a different '
                                        'experiment:\n  ebm_ngf: 8 vs 16\nUse a new one.')
  assert cli.message(e) == ('error: Workdir w holds checkpoints of a different '
                            'experiment:\n  ebm_ngf: 8 vs 16\n  Use a new one.')


def test_an_unknown_config_key_names_the_key_and_the_suggestion():
  c = load('tiny')
  with pytest.raises(AttributeError) as info:  # what ml_collections raises at parsing
    c.batchsize  # pylint: disable=pointless-statement
  text = cli.flag_error_message(info.value, ['prog', '--config.batchsize=3'])
  assert text == ("Unknown config key 'batchsize' in --config.batchsize=3. Did you mean "
                  "'batch_size'? The known keys are those of "
                  'hat_ebm_jax/config_lib.py:base_config().')


def test_a_missing_config_file_and_a_bad_value_are_user_errors():
  e = OSError('Failed loading config file config_config\n  Attempted [Relative path]:\n'
              "    configs/nope.py\n      [Errno 2] No such file or directory: "
              "'configs/nope.py'")
  assert cli.flag_error_message(e, []) == (
      "Cannot load the config file: [Errno 2] No such file or directory: "
      "'configs/nope.py'. Pass --config=PATH of a config file, e.g. "
      '--config=configs/tiny.py.')
  bad = flags.IllegalFlagValueError(
      "flag --config.batch_size=abc: invalid literal for int() with base 10: 'abc'")
  assert cli.flag_error_message(bad, []).endswith("'abc' (see --helpfull)")
  assert cli.flag_error_message(AttributeError('x'), ['prog']) is None  # not ours


@pytest.mark.parametrize('override,expected', [
    ({'mode': 'bogus'}, "Unknown mode 'bogus'; choose one of synthesis, joint"),
    ({'ebm_type': 'nope'}, "config.ebm_type='nope' is not a known net"),
    ({'mode': 'joint', 'gen_weights': ''}, 'Joint mode needs a pretrained generator'),
])
def test_config_mistakes_stop_the_build_as_user_errors(tmp_path, override, expected):
  c = load('tiny')
  for k, v in override.items():
    c[k] = v
  with pytest.raises(cli.UserError, match=re.escape(expected)):
    train.build(c, tmp_path / 'w')
  assert not (tmp_path / 'w').exists()


def test_a_workdir_that_is_a_file_or_not_writable_is_a_user_error(tmp_path, monkeypatch):
  (tmp_path / 'file').write_text('')
  with pytest.raises(cli.UserError, match='is a file, not a directory'):
    train.check_workdir(tmp_path / 'file')
  with pytest.raises(cli.UserError, match='lies under the file'):
    train.check_workdir(tmp_path / 'file' / 'w')
  monkeypatch.setattr(os, 'access', lambda path, mode: False)  # (root may write anyway)
  with pytest.raises(cli.UserError, match=r'is not writable .* pass a directory you can'):
    train.check_workdir(tmp_path / 'new')
  train.check_workdir('gs://bucket/run')  # a bucket is checked by its first write


def test_restore_step_without_checkpoints_is_a_user_error(tmp_path):
  c = load('tiny')
  c.restore_step = 4
  with pytest.raises(cli.UserError, match=r'config.restore_step=4, but .* no checkpoints'):
    train.build(c, tmp_path / 'w')
  assert 'restore_step' in config_lib.base_config()


# ----------------------------------------------------------------- the troubleshooting table


def troubleshooting_messages():
  """The messages of docs/troubleshooting.md's table."""
  text = open(os.path.join(REPO, 'docs', 'troubleshooting.md')).read()
  table = text.split('| message | what to do |', 1)[1].split('\n\n', 1)[0]
  return re.findall(r'^\| `([^`]+)`', table, re.M)


def package_sources():
  out = []
  for root in ('hat_ebm_jax', 'benchmarks'):
    for d, _, files in os.walk(os.path.join(REPO, root)):
      out += [open(os.path.join(d, f)).read() for f in files if f.endswith('.py')]
  return '\n'.join(out).replace("\\'", "'")


def test_every_message_of_the_troubleshooting_table_is_raised_by_the_package():
  sources = package_sources()
  messages = troubleshooting_messages()
  assert len(messages) >= 10
  for m in messages:
    # The table writes "..." for a value and N for a number; each literal piece of the
    # message must appear in the sources, in one string.
    pieces = [p.strip(' \'"[]()') for p in re.split(r'\.\.\.|\bN\b', m)]
    pieces = [p for p in pieces if len(p) > 3]
    assert pieces, m
    for p in pieces:
      assert p in sources, f'docs/troubleshooting.md message {m!r}: {p!r} not in sources'


# ----------------------------------------------------------------- real commands


def command(*argv, **env):
  e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH=REPO, JAX_PLATFORMS='cpu',
           **env)
  return subprocess.run([sys.executable, *argv], cwd=REPO, env=e, capture_output=True,
                        text=True, timeout=600)


def assert_one_line_user_error(p, expected):
  assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
  assert 'Traceback' not in p.stderr, p.stderr[-3000:]
  lines = [l for l in p.stderr.splitlines() if l.startswith('error: ')]
  assert len(lines) == 1 and expected in lines[0], p.stderr[-3000:]
  return lines[0]


def test_main_refuses_an_unknown_key_and_a_wrong_type_at_parsing(tmp_path):
  """Flag parsing fails before JAX is imported: these commands cost about 0.2 s of CPU."""
  p = command('-m', 'hat_ebm_jax.main', '--config=configs/tiny.py',
              f'--workdir={tmp_path}/w', '--config.batchsize=3')
  print(assert_one_line_user_error(p, "Did you mean 'batch_size'?"))
  p = command('-m', 'hat_ebm_jax.main', '--config=configs/tiny.py',
              f'--workdir={tmp_path}/w', '--config.batch_size=abc')
  print(assert_one_line_user_error(p, "--config.batch_size=abc: invalid literal for int()"))
  p = command('-m', 'hat_ebm_jax.main', '--config=configs/nope.py', f'--workdir={tmp_path}')
  print(assert_one_line_user_error(p, 'Cannot load the config file'))
  assert not (tmp_path / 'w').exists()


@pytest.mark.slow
def test_every_entry_point_prints_one_line_for_a_user_mistake(tmp_path):
  (tmp_path / 'file').write_text('')
  cases = [
      (('-m', 'hat_ebm_jax.main', '--config=configs/tiny.py', f'--workdir={tmp_path}/file'),
       'is a file, not a directory'),
      (('-m', 'hat_ebm_jax.main', '--config=configs/tiny.py:joint',
        f'--workdir={tmp_path}/w'), 'Joint mode needs a pretrained generator'),
      (('-m', 'hat_ebm_jax.main', '--config=configs/tiny.py:joint',
        f'--workdir={tmp_path}/w', f'--config.gen_weights={tmp_path}/nowhere'), 'No pretrained weights at'),
      (('-m', 'hat_ebm_jax.pretrained', f'--tf_checkpoint={tmp_path}/nowhere/ckpt',
        '--net=gen_sngan32', f'--out={tmp_path}/out'), 'Cannot read a TF checkpoint'),
      # the old command name names the new one
      (('-m', 'hat_ebm_jax.convert', '--tf_checkpoint=x', '--net=gen_nope', '--out=y'),
       'is now `python -m hat_ebm_jax.pretrained` (same flags)'),
      (('-m', 'hat_ebm_jax.prepare_data', '--dataset=celeb_a'),
       'celeb_a cannot be downloaded automatically'),
      (('-m', 'hat_ebm_jax.toy', '--config=configs/tiny.py', f'--out={tmp_path}/g'),
       'pretrain_weak_generator is for the 2D toys'),
      (('-m', 'benchmarks.langevin', '--config=nope'), "No config 'nope'"),
      (('-m', 'benchmarks.mixed_precision', '--config=nope', f'--workdir={tmp_path}/p'),
       "No config 'nope'"),
  ]
  for argv, expected in cases:
    print(assert_one_line_user_error(command(*argv), expected))
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'out').exists()
