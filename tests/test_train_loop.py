"""The loop's scheduling on `configs/tiny.py`: nothing comes to the host between its
boundaries (log, plot, evaluation, checkpoint), each sampling program compiles once per
run, a divergence between boundaries is caught before the next save, and
`profile_steps` writes a trace."""

import traceback

import jax
import pytest
from jax._src import array as jax_array
from jax._src import config as jax_config

from hat_ebm_jax import checkpointing, config_lib, monitoring, train
from tests.conftest import tiny


def test_steps_between_boundaries_move_nothing_to_the_host_and_plots_compile_once(
    tmp_path, monkeypatch):
  # Boundaries at steps 2, 3, 4, 6 (plots at 2, 4, 6; log and checkpoint at 3, 6); steps
  # 1 and 5 are plain steps, run with device-to-host transfers disallowed: the guard
  # raises on accelerators; on CPU (where it never fires: the arrays are host memory)
  # every fetch of an array's value (`device_get`, `float`, `bool`, ...) under it is
  # recorded instead.
  loop, plot = train.train_loop, train._plot
  compiles = []  # (step of the plot being made or None, event)
  plotting = []
  fetched_outside_boundaries = []
  value = jax_array.ArrayImpl._value

  def recorded_value(self):
    if jax_config.transfer_guard_device_to_host.value == 'disallow':
      fetched_outside_boundaries.append(''.join(traceback.format_stack(limit=12)))
    return value.fget(self)

  def guarded_loop(*args, **kwargs):
    with jax.transfer_guard_device_to_host('disallow'):
      return loop(*args, **kwargs)

  def plot_and_record(ctx, state, step, batch):
    plotting.append(step)
    try:
      return plot(ctx, state, step, batch)
    finally:
      plotting.append(None)

  def listener(event, duration, **kwargs):
    del duration, kwargs
    if event.startswith('/jax/core/compile/') or event.startswith('/jax/compilation_cache/'):
      compiles.append((plotting[-1] if plotting else None, event))

  monkeypatch.setattr(train, 'train_loop', guarded_loop)
  monkeypatch.setattr(train, '_plot', plot_and_record)
  monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(recorded_value))
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    result = train.run(tiny(num_training_steps=6, plot_freq=2, log_freq=3,
                            checkpoint_freq=3), str(tmp_path))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert result['step'] == 6
  assert not fetched_outside_boundaries, (len(fetched_outside_boundaries),
                                          fetched_outside_boundaries[0])
  assert [s for s in plotting if s is not None] == [2, 4, 6]
  first = [e for s, e in compiles if s == 2]
  assert any('backend_compile' in e or 'cache' in e for e in first), compiles
  assert [e for s, e in compiles if s in (4, 6)] == []  # the later plots reuse it
  assert (tmp_path / 'samples' / 'hat_000004.png').exists()


def test_a_divergence_between_boundaries_is_caught_before_the_next_save(tmp_path):
  train.run(tiny(num_training_steps=3), str(tmp_path))
  c = tiny(num_training_steps=9, data_epsilon=float('inf'), log_freq=100, plot_freq=100,
           checkpoint_freq=3)
  with pytest.raises(monitoring.DivergenceError, match='step 4') as e:
    train.run(c, str(tmp_path))
  message = str(e.value)
  assert 'steps 4..6' in message and 'checked at step 6' in message
  assert 'energy_data' in message or 'ebm_loss' in message
  assert checkpointing.create_manager(tmp_path, 3).latest_step() == 3  # 6 never saved


def test_profile_steps_writes_a_trace_of_those_steps(tmp_path):
  train.run(tiny(num_training_steps=3, profile_steps=2, profile_num_steps=1,
                 plot_freq=100, log_freq=100), str(tmp_path))
  traces = list((tmp_path / 'profile').rglob('*.xplane.pb'))
  assert traces and all(p.stat().st_size > 0 for p in traces), list(
      (tmp_path / 'profile').rglob('*'))


@pytest.mark.parametrize('key,value', [('profile_steps', -1), ('profile_num_steps', 0)])
def test_profile_keys_must_be_whole_and_in_range(key, value):
  c = tiny()
  with c.unlocked():
    c[key] = value
  with pytest.raises(ValueError, match=f'config.{key}'):
    config_lib.validate(c)
