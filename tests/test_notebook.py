"""The Colab demo `notebooks/hat_ebm_demo.ipynb` runs top to bottom in its fast mode
(`HAT_EBM_DEMO_FAST=1`: tiny toy and digits runs) and ends with its results line."""

import json
import os
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, 'notebooks', 'hat_ebm_demo.ipynb')
KEYS = {'fast', 'seconds', 'toy_synth_mmd_gen', 'toy_synth_mmd_hat', 'toy_refine_mmd_gen',
        'toy_refine_mmd_hat', 'digits_fd_floor', 'digits_fd_gen', 'digits_fd_hat',
        'ood_auroc_noise', 'ood_auroc_inverted'}


def _stream_text(nb):
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.get('output_type') == 'stream':
        yield out.get('text', '')


def test_notebook_is_valid_and_colab_ready():
  nbformat = pytest.importorskip('nbformat')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.metadata['kernelspec']['name'] == 'python3'
  assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), (
      'commit the notebook without outputs')
  first = next(c for c in nb.cells if c.cell_type == 'code').source
  assert 'pip' in first and 'install' in first and 'import hat_ebm_jax' in first


@pytest.mark.slow
def test_notebook_runs_in_fast_mode(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  pytest.importorskip('ipykernel')
  # The kernel is a child process: it inherits this environment (fast mode, the repo on
  # the path without installing it, a private workdir) and runs this interpreter
  # (jupyter_client maps the kernelspec's `python` to sys.executable).
  monkeypatch.setenv('HAT_EBM_DEMO_FAST', '1')
  monkeypatch.setenv('HAT_EBM_DEMO_WORKDIR', str(tmp_path / 'runs'))
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')
  monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
      [REPO] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(
      nb, timeout=900, kernel_name='python3',
      resources={'metadata': {'path': os.path.join(REPO, 'notebooks')}})
  t = time.time()
  client.execute()  # raises CellExecutionError with the cell and traceback on any error
  seconds = time.time() - t
  lines = [l for text in _stream_text(nb) for l in text.splitlines()
           if l.startswith('HAT_EBM_DEMO_RESULTS ')]
  assert len(lines) == 1, 'the last cell prints one results line'
  results = json.loads(lines[0].split(' ', 1)[1])
  assert set(results) == KEYS
  assert results['fast'] is True
  for k in KEYS - {'fast'}:
    assert isinstance(results[k], float) and results[k] == results[k], (k, results[k])
  assert 0.0 <= results['ood_auroc_noise'] <= 1.0
  images = sum(1 for c in nb.cells for o in c.get('outputs', [])
               if 'image/png' in o.get('data', {}))
  assert images >= 6  # toy runs, landscapes, digit grids, energy histogram
  sys.stderr.write(f'notebook (fast mode) ran in {seconds:.0f}s\n')
