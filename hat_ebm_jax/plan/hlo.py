"""What an optimized HLO module's text says, parsed without jax or libtpu: the bytes of
array shapes, every collective with its operand bytes and how often a step runs it
(while-loop trip counts included), the largest buffers, and `cost_analysis()` results
as one dict."""

import collections
import re
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2,
                's32': 4, 'u32': 4, 'f32': 4, 's64': 8, 'u64': 8, 'f64': 8, 'c64': 8,
                'c128': 16, 'f8e4m3fn': 1, 'f8e5m2': 1, 's4': 1, 'u4': 1}
_SHAPE = re.compile(r'\b(' + '|'.join(sorted(_DTYPE_BYTES, key=len, reverse=True))
                    + r')\[([0-9,]*)\]')
COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'collective-permute',
               'all-to-all')
_OP = re.compile(r'=\s*(.*?)\s(' + '|'.join(COLLECTIVES) + r')(-start)?\((.*)$')
_COMP = re.compile(r'^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_CALLS = re.compile(r'(?:calls|to_apply|body|condition|branch_computations)='
                    r'(\{[^}]*\}|%?[\w.\-]+)')
_WHILE = re.compile(r'\swhile\(.*body=%?([\w.\-]+)')
_TRIP = re.compile(r'known_trip_count[^0-9]*([0-9]+)')
_DEF = re.compile(r'^\s+(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s[\w\-]+\(')
_OPNAME = re.compile(r'op_name="([^"]*)"')
_SOURCE = re.compile(r'source_file="([^"]*)"\s+source_line=([0-9]+)')


def shape_bytes(text: str) -> int:
  """Total bytes of the array shapes written in `text` (e.g. 'f32[8,4]{1,0} %x')."""
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    total += _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d]))
  return total


def _operands(rest: str) -> str:
  """The operand list of an instruction, given the text after its opening parenthesis."""
  depth = 1
  for i, ch in enumerate(rest):
    depth += {'(': 1, ')': -1}.get(ch, 0)
    if depth == 0:
      return rest[:i]
  return rest


def _computations(hlo_text: str) -> Tuple[Dict[str, List[str]], Optional[str]]:
  """An HLO module's computations, `{name: its indented lines}`, and the entry's name."""
  comps: Dict[str, List[str]] = {}
  current = None
  for line in hlo_text.splitlines():
    m = _COMP.match(line)
    if m and not line.startswith(' '):  # a computation's header (unindented)
      current = m.group(1)
      comps[current] = []
    elif current is not None and line.startswith(' '):
      comps[current].append(line)
  entry = next((name for name in comps
                if re.search(r'^ENTRY\s+%?' + re.escape(name) + r'\s', hlo_text, re.M)),
               None)
  return comps, entry


def _run_counts(comps: Dict[str, List[str]], entry: Optional[str],
                callees: Callable[[str], List[str]],
                loop_trips: Optional[int]) -> Dict[str, int]:
  """How many times one run of the entry runs each computation it reaches through
  `callees(line)` (the names an instruction line calls): a while body its trip count
  (XLA's `known_trip_count`, else `loop_trips`) times per run of its caller."""
  runs: Dict[str, int] = collections.defaultdict(int)

  def visit(name, times, depth=0):
    if name not in comps or depth > 50:
      return
    runs[name] += times
    for line in comps[name]:
      w = _WHILE.search(line)
      trips = 1
      if w:
        t = _TRIP.search(line)
        trips = int(t.group(1)) if t else (loop_trips or 1)
      for callee in callees(line):
        visit(callee, times * (trips if w and callee == w.group(1) else 1), depth + 1)

  if entry is not None:
    visit(entry, 1)
  return runs


def _named(targets: List[str]) -> List[str]:
  """The computation names in `_CALLS`/`_RUNS` matches (`%a` or `{%a, %b}`)."""
  return [callee for target in targets for callee in re.findall(r'[\w.\-]+', target)]


def collectives(hlo_text: str, loop_trips: Optional[int] = None) -> List[Dict]:
  """Every collective of an optimized HLO module: kind, operand bytes per device, how
  many times a step runs it (a while body's trip count: XLA's `known_trip_count`, else
  `loop_trips`), and where it came from (`op_name`, source line)."""
  comps, entry = _computations(hlo_text)
  shapes: Dict[str, Dict[str, str]] = {  # computation -> instruction -> result shape
      name: {d.group(1): d.group(2) for d in map(_DEF.match, lines) if d}
      for name, lines in comps.items()}
  runs = _run_counts(comps, entry, lambda line: _named(_CALLS.findall(line)), loop_trips)
  out = []
  for name, lines in comps.items():
    if not runs.get(name):
      continue
    for line in lines:
      m = _OP.search(line)
      if not m:
        continue
      op = _OPNAME.search(line)
      src = _SOURCE.search(line)
      operands = re.findall(r'%([\w.\-]+)', _operands(m.group(4)))
      # XLA:TPU emits a reduce-scatter as a fusion around an all-reduce.
      kind = 'reduce-scatter' if name.startswith('all-reduce-scatter') else m.group(2)
      out.append(dict(kind=kind,
                      bytes=sum(shape_bytes(shapes[name].get(o, '')) for o in operands),
                      runs=runs[name], op_name=op.group(1) if op else '',
                      source=f'{src.group(1).split("/")[-1]}:{src.group(2)}' if src else ''))
  return out


def collective_summary(items: List[Dict]) -> Dict[str, Dict[str, int]]:
  """`{kind: {'ops': in the HLO, 'per_step': runs per step, 'bytes_per_step': ...}}`."""
  out = {k: dict(ops=0, per_step=0, bytes_per_step=0) for k in COLLECTIVES}
  for c in items:
    s = out[c['kind']]
    s['ops'] += 1
    s['per_step'] += c['runs']
    s['bytes_per_step'] += c['runs'] * c['bytes']
  return out


def cost_dict(cost) -> Dict[str, float]:
  """A `cost_analysis()` result as one `{name: value}` dict: jax versions return a dict,
  or a list of dicts (one per program), whose values are then summed."""
  if not isinstance(cost, (list, tuple)):
    return dict(cost or {})
  out: Dict[str, float] = {}
  for c in cost:
    for k, v in (c or {}).items():
      out[k] = out.get(k, 0.0) + float(v)
  return out


def largest_buffers(hlo_text: str, k: int = 5) -> List[Tuple[str, int]]:
  """The `k` largest instruction results of the optimized HLO, with their op names."""
  found = []
  for line in hlo_text.splitlines():
    m = re.match(r'\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(?[^=]*?)\s[\w\-]+\(', line)
    if not m:
      continue
    op = _OPNAME.search(line)
    found.append((op.group(1) if op else m.group(1), shape_bytes(m.group(2))))
  found.sort(key=lambda t: -t[1])
  seen, out = set(), []
  for name, b in found:
    if name not in seen:
      seen.add(name)
      out.append((name, b))
    if len(out) == k:
      break
  return out


def group_sources(items: List[Dict]) -> List[Dict]:
  """Collectives grouped by (kind, op name without the jit prefix), largest first."""
  groups: Dict[Tuple[str, str], Dict] = {}
  for c in items:
    name = re.sub(r'^jit\([^)]*\)/', '', c['op_name'])
    g = groups.setdefault((c['kind'], name), dict(kind=c['kind'], op_name=name,
                                                   source=c['source'], ops=0,
                                                   per_step=0, bytes_per_step=0))
    g['ops'] += 1
    g['per_step'] += c['runs']
    g['bytes_per_step'] += c['runs'] * c['bytes']
  return sorted(groups.values(), key=lambda g: -g['bytes_per_step'])


# ------------------------------------------------------------------ memory spaces

_ELEMENT = re.compile(r'\b(' + '|'.join(sorted(_DTYPE_BYTES, key=len, reverse=True))
                      + r')\[([0-9,]*)\](\{[^}]*\})?')
_SPACE = re.compile(r'S\(([0-9]+)\)')
_INSTR = re.compile(r'^\s+(?:ROOT\s+)?%([\w.\-]+)\s*=\s*(.*?)\s([\w\-]+)\((.*)$')
# Instructions that move no array bytes of their own: views, tuples, the waits of async
# pairs (their `-start` counts the transfer), and control flow (its computations count).
_NO_TRAFFIC = ('parameter', 'get-tuple-element', 'tuple', 'bitcast', 'constant',
               'after-all', 'partition-id', 'replica-id', 'opt-barrier', 'while', 'call',
               'conditional', 'copy-done', 'slice-done', 'send-done', 'recv-done')
# Calls whose callee runs as its own instructions (a while's body, a call, a branch);
# a fusion's or a reducer's computation runs inside its one instruction.
_RUNS = re.compile(r'(?:body|condition|branch_computations|true_computation|'
                   r'false_computation|to_apply)=(\{[^}]*\}|%?[\w.\-]+)')


def space_bytes(text: str) -> Dict[int, int]:
  """`{memory space: bytes}` of the array shapes written in `text`, each by its layout's
  `S(n)` (none: 0, the HBM)."""
  out: Dict[int, int] = collections.defaultdict(int)
  for dtype, dims, layout in _ELEMENT.findall(text):
    m = _SPACE.search(layout or '')
    out[int(m.group(1)) if m else 0] += (
        _DTYPE_BYTES[dtype] * int(np.prod([int(d) for d in dims.split(',') if d])))
  return dict(out)


def memory_space_traffic(hlo_text: str, loop_trips: Optional[int] = None) -> Dict[int, int]:
  """Bytes an optimized HLO module reads and writes per run, `{memory space: bytes}`, by
  the shapes and layouts of its instructions (TPU: 0 is the HBM; on-chip memories have
  other numbers, e.g. v4's CMEM 3, v5e's VMEM 1).

  Every instruction of the entry computation, and of what it runs as instructions (while
  bodies and conditions, calls, branches), reads its operands and writes its result, each
  in its memory space; a while body counts its trip count (XLA's `known_trip_count`, else
  `loop_trips`) times, with the placement XLA chose inside the step. An async copy or
  slice (`copy-start`, `slice-start`) moves its destination's bytes: read in the
  source's space, written in the destination's. Views, tuples, the waits of async pairs
  and control flow move nothing. A fusion counts its whole operands (one that reads part
  of an operand is over-counted), so the sum is an estimate beside XLA's `bytes
  accessed`, which counts every space at one rate; its use is the split.
  """
  comps, entry = _computations(hlo_text)

  def control_flow_callees(line: str) -> List[str]:
    # Only control flow runs a computation as instructions of its own; a fusion's or a
    # reducer's computation runs inside its one instruction.
    m = _INSTR.match(line)
    return (_named(_RUNS.findall(line))
            if m and m.group(3) in ('while', 'call', 'conditional') else [])

  runs = _run_counts(comps, entry, control_flow_callees, loop_trips)
  out: Dict[int, int] = collections.defaultdict(int)
  for name, times in runs.items():
    shapes: Dict[str, str] = {}

    def add(counts: Dict[int, int]):
      for space, b in counts.items():
        out[space] += times * b

    for line in comps[name]:
      m = _INSTR.match(line)
      if not m:
        continue
      result, shape, op, rest = m.groups()
      shapes[result] = shape
      if op in _NO_TRAFFIC:
        continue
      operands = re.findall(r'%([\w.\-]+)', _operands(rest))
      if op in ('copy-start', 'slice-start'):
        # copy-start: (destination, source, context); slice-start: ((source), slice, ...).
        elements = _ELEMENT.findall(shape)
        dst = elements[0] if op == 'copy-start' else elements[1]
        moved = space_bytes(f'{dst[0]}[{dst[1]}]{dst[2]}')
        src = space_bytes(' '.join(shapes.get(o, '') for o in operands))
        add(moved)
        add({next(iter(src), 0): sum(moved.values())})
        continue
      for o in operands:
        add(space_bytes(shapes.get(o, '')))
      add(space_bytes(shape))
  return dict(out)
