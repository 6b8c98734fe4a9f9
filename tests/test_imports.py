"""The package's import graph: every module imports on its own, the imports have no
cycle, and the bottom layers import what their docstrings say.

    python -m pytest -q -n 0 tests/test_imports.py

The graph is read from the source (`ast`): every import of a module, at module level
(including inside `if`/`try`/`with`) and inside functions and classes, since an import
deferred into a function still makes the two modules depend on each other. Nothing is
left out: `if __name__ == '__main__':` blocks count too. Importing `a.b.c` also runs the
packages `a.b` and `a` (unless the importer lies inside them already), so those are
edges too. There are no compatibility shims: each thing has one name.
"""

import ast
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Set

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = 'hat_ebm_jax'


def package_modules() -> Dict[str, str]:
  """{dotted module name: file path} of every module of the package."""
  out = {}
  for root, dirs, files in os.walk(os.path.join(REPO, PACKAGE)):
    dirs[:] = sorted(d for d in dirs if not d.startswith(('.', '__pycache__')))
    for f in sorted(files):
      if f.endswith('.py'):
        rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].split(os.sep)
        if rel[-1] == '__init__':
          rel = rel[:-1]
        out['.'.join(rel)] = os.path.join(root, f)
  return out


def _imports(tree: ast.Module):
  """The Import/ImportFrom nodes of a module, at any depth."""
  return (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)))


def import_graph() -> Dict[str, Set[str]]:
  """{module: the package's modules it imports}."""
  modules = package_modules()
  graph = {}
  for name, path in modules.items():
    is_package = path.endswith('__init__.py')
    with open(path, encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
    targets = set()
    for node in _imports(tree):
      if isinstance(node, ast.Import):
        targets.update(a.name for a in node.names)
        continue
      base = node.module or ''
      if node.level:  # relative
        anchor = name.split('.') if is_package else name.split('.')[:-1]
        anchor = anchor[:len(anchor) - node.level + 1]
        base = '.'.join(anchor + ([base] if base else []))
      targets.add(base)
      targets.update(f'{base}.{a.name}' for a in node.names
                     if f'{base}.{a.name}' in modules)
    deps = set()
    for t in targets:
      parts = t.split('.')
      for i in range(1, len(parts) + 1):
        dep = '.'.join(parts[:i])
        inside = name == dep or name.startswith(dep + '.')
        if dep in modules and not inside:
          deps.add(dep)
    graph[name] = deps
  return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
  """A cycle `[a, b, ..., a]` of `graph`, or None."""
  state: Dict[str, int] = {}  # 1: on the path, 2: done
  path: List[str] = []

  def visit(n):
    state[n] = 1
    path.append(n)
    for m in sorted(graph.get(n, ())):
      if state.get(m) == 1:
        return path[path.index(m):] + [m]
      if m not in state:
        found = visit(m)
        if found:
          return found
    state[n] = 2
    path.pop()
    return None

  for n in sorted(graph):
    if n not in state:
      found = visit(n)
      if found:
        return found
  return None


def test_the_imports_have_no_cycle():
  graph = import_graph()
  assert len(graph) > 20 and graph['hat_ebm_jax.train']
  cycle = find_cycle(graph)
  assert cycle is None, 'import cycle: ' + ' -> '.join(cycle)


def test_find_cycle_finds_one():
  assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
  assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None


def test_the_bottom_layers_import_only_what_they_say():
  """`cli` nothing of the package; `checkpointing` only `cli` (orbax holds the rest);
  `convert` only `models`; `models` only itself; `pretrained` joins them."""
  g = import_graph()
  models = {m for m in g if m.startswith('hat_ebm_jax.models')}
  assert g['hat_ebm_jax.cli'] == set()
  assert g['hat_ebm_jax.checkpointing'] <= {'hat_ebm_jax.cli'}
  assert g['hat_ebm_jax.convert'] <= {'hat_ebm_jax.models'}
  assert all(g[m] <= models for m in models)
  assert {'hat_ebm_jax.checkpointing', 'hat_ebm_jax.convert',
          'hat_ebm_jax.models'} <= g['hat_ebm_jax.pretrained']


# Imports every module first, with none of the package loaded, in one fresh interpreter
# (the third-party libraries stay loaded between modules; the absl flags a module defines
# are removed again, as a new process would not have them).
_IMPORT_EACH = '''
import importlib, sys
from absl import flags
defined = set(flags.FLAGS)
failed = []
for name in sys.argv[1:]:
  for m in [m for m in sys.modules if m == 'hat_ebm_jax' or m.startswith('hat_ebm_jax.')]:
    del sys.modules[m]
  try:
    importlib.import_module(name)
  except Exception as e:  # pylint: disable=broad-except
    failed.append(f'{name}: {type(e).__name__}: {e}')
  for f in set(flags.FLAGS) - defined:
    delattr(flags.FLAGS, f)
print('\\n'.join(failed) or 'ok')
'''


def test_every_module_imports_on_its_own():
  names = sorted(package_modules())
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  p = subprocess.run([sys.executable, '-c', _IMPORT_EACH, *names], cwd=REPO, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  assert p.stdout.strip().splitlines()[-1] == 'ok', p.stdout


@pytest.mark.parametrize('old', [
    'hat_ebm_jax.convert:net_kwargs', 'hat_ebm_jax.modes.base:make_generator',
    'hat_ebm_jax.modes.base:make_ebm', 'hat_ebm_jax.evaluate:ood_sets',
    'hat_ebm_jax.evaluate:fid_feature_fn', 'hat_ebm_jax.config_lib:sampler_config',
    'hat_ebm_jax.config_lib:update_latents', 'hat_ebm_jax.config_lib:deprecated_eval_config',
    'hat_ebm_jax.langevin:sampler_settings',
])
def test_one_name_for_each_thing(old):
  """Names that moved exist only where they moved to: no forwarding, no aliases."""
  import importlib  # pylint: disable=g-import-not-at-top
  module, name = old.split(':')
  assert not hasattr(importlib.import_module(module), name), old
  assert not hasattr(importlib.import_module(module), '__getattr__'), module


def architecture_units() -> Dict[str, Set[str]]:
  """{row name as ARCHITECTURE.md writes it (`x.py`, a package `x/`): the package's
  top-level modules and packages it imports (by name, without `.py` or `/`)}, from the
  import graph; a package's row joins its submodules' imports, less itself."""
  modules, graph = package_modules(), import_graph()
  units: Dict[str, Set[str]] = {}
  for name, path in modules.items():
    parts = name.split('.')
    if len(parts) == 1:
      continue
    is_package = len(parts) > 2 or os.path.basename(path) == '__init__.py'
    deps = units.setdefault(parts[1] + ('/' if is_package else '.py'), set())
    deps.update(d.split('.')[1] for d in graph[name]
                if len(d.split('.')) > 1 and d.split('.')[1] != parts[1])
  return units


def architecture_table(text: str) -> Dict[str, Set[str]]:
  """{module cell: the backticked names of its imports cell} of the `## Modules` table
  (`none` for none)."""
  section = text[text.index('## Modules'):]
  rows = {}
  for line in section.splitlines():
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if len(cells) != 3 or not cells[0].startswith('`'):
      continue
    rows[cells[0].strip('`')] = set(re.findall(r'`([^`]+)`', cells[2]))
  return rows


def test_the_architecture_table_has_each_module_s_imports():
  """ARCHITECTURE.md's module table: one row per module and package, and each row's
  imports column equal to what the code imports (ast)."""
  with open(os.path.join(REPO, 'ARCHITECTURE.md'), encoding='utf-8') as f:
    table = architecture_table(f.read())
  actual = architecture_units()
  fmt = lambda names: ', '.join(f'`{n}`' for n in sorted(names)) or 'none'
  problems = [f'add a row `{u}` with imports: {fmt(actual[u])}'
              for u in sorted(set(actual) - set(table))]
  problems += [f'remove the row `{u}` (no such module)' for u in sorted(set(table) - set(actual))]
  problems += [f'row `{u}`: the imports column says {fmt(table[u])}; write {fmt(actual[u])}'
               for u in sorted(set(actual) & set(table)) if table[u] != actual[u]]
  assert not problems, 'ARCHITECTURE.md, fix:\n  ' + '\n  '.join(problems)


def test_the_architecture_table_parser():
  text = ('## Modules\n\n| module | owns | imports |\n| --- | --- | --- |\n'
          '| `a.py` | things `x` | `b`, `c/` |\n| `d/` | more | none |\n')
  assert architecture_table(text) == {'a.py': {'b', 'c/'}, 'd/': set()}
  assert architecture_table(text.replace('none', '`none`'))['d/'] == {'none'}


def test_the_layout_page_names_every_module():
  """docs/layout.md's table names every top-level module and package."""
  with open(os.path.join(REPO, 'docs', 'layout.md'), encoding='utf-8') as f:
    layout = f.read()
  missing = sorted(u for u in architecture_units() if u.rstrip('/').replace('.py', '')
                   not in layout)
  assert not missing, f'docs/layout.md does not name {missing}'
