"""The planner's HLO reading (`hat_ebm_jax.plan.hlo`) on a small hand-written module: no
compilation, no libtpu."""

from hat_ebm_jax.plan import hlo

HLO = '''HloModule jit_step, entry_computation_layout={(f32[8,4]{1,0}, bf16[16]{0})->f32[8,4]{1,0}}

%add (x: f32[], y: f32[]) -> f32[] {
  %x = f32[] parameter(0)
  %y = f32[] parameter(1)
  ROOT %add = f32[] add(f32[] %x, f32[] %y)
}

%body (p: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  %g = f32[8,4]{1,0} get-tuple-element((s32[], f32[8,4]{1,0}) %p), index=1
  %ar = f32[8,4]{1,0} all-reduce(f32[8,4]{1,0} %g), replica_groups={}, to_apply=%add, metadata={op_name="jit(step)/while/body/psum" source_file="/src/hat_ebm_jax/langevin.py" source_line=12}
  %i = s32[] get-tuple-element((s32[], f32[8,4]{1,0}) %p), index=0
  ROOT %t = (s32[], f32[8,4]{1,0}) tuple(s32[] %i, f32[8,4]{1,0} %ar)
}

%cond (p: (s32[], f32[8,4])) -> pred[] {
  %p = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (a: f32[8,4], b: bf16[16]) -> (s32[], f32[8,4]) {
  %a = f32[8,4]{1,0} parameter(0)
  %b = bf16[16]{0} parameter(1)
  %ag = bf16[32]{0} all-gather(bf16[16]{0} %b), dimensions={0}, metadata={op_name="jit(step)/gather"}
  %z = s32[] constant(0)
  %init = (s32[], f32[8,4]{1,0}) tuple(s32[] %z, f32[8,4]{1,0} %a)
  ROOT %w = (s32[], f32[8,4]{1,0}) while((s32[], f32[8,4]{1,0}) %init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
}
'''


def test_shape_bytes():
  assert hlo.shape_bytes('f32[8,4]{1,0} %x') == 128
  assert hlo.shape_bytes('(s32[], bf16[2,3]{1,0})') == 4 + 12
  assert hlo.shape_bytes('pred[]') == 1
  assert hlo.shape_bytes('no shape here') == 0


def test_collectives_count_a_while_body_by_its_trip_count():
  items = hlo.collectives(HLO)
  assert items == [
      dict(kind='all-reduce', bytes=128, runs=5, op_name='jit(step)/while/body/psum',
           source='langevin.py:12'),
      dict(kind='all-gather', bytes=32, runs=1, op_name='jit(step)/gather', source=''),
  ]
  summary = hlo.collective_summary(items)
  assert summary['all-reduce'] == dict(ops=1, per_step=5, bytes_per_step=640)
  assert summary['all-gather'] == dict(ops=1, per_step=1, bytes_per_step=32)
  assert summary['reduce-scatter'] == dict(ops=0, per_step=0, bytes_per_step=0)
  groups = hlo.group_sources(items)
  assert [(g['kind'], g['op_name']) for g in groups] == [('all-reduce', 'while/body/psum'),
                                                         ('all-gather', 'gather')]


def test_a_loop_without_a_known_trip_count_takes_the_given_one():
  text = HLO.replace(', backend_config={"known_trip_count":{"n":"5"}}', '')
  assert [c['runs'] for c in hlo.collectives(text, loop_trips=7)] == [7, 1]
  assert [c['runs'] for c in hlo.collectives(text)] == [1, 1]
  assert hlo.collectives('HloModule empty') == []


def test_largest_buffers_and_cost_dict():
  (name, size), *_ = hlo.largest_buffers(HLO, k=3)
  assert size == 4 + 128 and name in ('t', 'init', 'w', 'p')
  assert hlo.cost_dict({'flops': 2.0}) == {'flops': 2.0}
  assert hlo.cost_dict(None) == {}
  assert hlo.cost_dict([{'flops': 2.0}, {'flops': 3.0, 'bytes accessed': 1.0}]) == {
      'flops': 5.0, 'bytes accessed': 1.0}


SPACES_HLO = '''HloModule jit_body

%fused (p0: bf16[4,4], p1: f32[2,4]) -> f32[2,4] {
  %p0 = bf16[4,4]{1,0:S(3)} parameter(0)
  %p1 = f32[2,4]{1,0} parameter(1)
  ROOT %huge = f32[2,4]{1,0:S(3)} add(f32[2,4]{1,0} %p1, f32[2,4]{1,0} %p1)
}

%body (p: (s32[], f32[2,4])) -> (s32[], f32[2,4]) {
  %p = (s32[], f32[2,4]{1,0:S(3)}) parameter(0)
  %g = f32[2,4]{1,0:S(3)} get-tuple-element((s32[], f32[2,4]{1,0:S(3)}) %p), index=1
  %m = f32[2,4]{1,0:S(3)} multiply(f32[2,4]{1,0:S(3)} %g, f32[2,4]{1,0:S(3)} %g)
  %i = s32[] get-tuple-element((s32[], f32[2,4]{1,0:S(3)}) %p), index=0
  ROOT %t = (s32[], f32[2,4]{1,0:S(3)}) tuple(s32[] %i, f32[2,4]{1,0:S(3)} %m)
}

%cond (p: (s32[], f32[2,4])) -> pred[] {
  %p = (s32[], f32[2,4]{1,0:S(3)}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (k: bf16[4,4], x: f32[2,4]) -> (s32[], f32[2,4]) {
  %k = bf16[4,4]{1,0} parameter(0)
  %x = f32[2,4]{1,0} parameter(1)
  %cs = (bf16[4,4]{1,0:S(3)}, bf16[4,4]{1,0}, u32[]{:S(2)}) copy-start(bf16[4,4]{1,0} %k)
  %cd = bf16[4,4]{1,0:S(3)} copy-done((bf16[4,4]{1,0:S(3)}, bf16[4,4]{1,0}, u32[]{:S(2)}) %cs)
  %ss = ((f32[2,4]{1,0}), f32[1,4]{1,0:S(3)}, s32[]{:S(2)}) slice-start(f32[2,4]{1,0} %x), slice={[0:1], [0:4]}
  %sd = f32[1,4]{1,0:S(3)} slice-done(((f32[2,4]{1,0}), f32[1,4]{1,0:S(3)}, s32[]{:S(2)}) %ss)
  %f = f32[2,4]{1,0:S(3)} fusion(bf16[4,4]{1,0:S(3)} %cd, f32[2,4]{1,0} %x), kind=kLoop, calls=%fused
  %z = s32[] constant(0)
  %init = (s32[], f32[2,4]{1,0:S(3)}) tuple(s32[] %z, f32[2,4]{1,0:S(3)} %f)
  ROOT %w = (s32[], f32[2,4]{1,0:S(3)}) while((s32[], f32[2,4]{1,0:S(3)}) %init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"5"}}
}
'''


def test_traffic_is_split_by_memory_space_with_async_copies_counted_once():
  """HBM (space 0) against on-chip memory (v4's CMEM is S(3)): the kernel's prefetch reads
  32 B of HBM and writes 32 B of CMEM, the slice moves 16 B the same way, the fusion reads
  the CMEM kernel (32) and the HBM input (32) and writes 32 B of CMEM (its inner
  instructions are not counted), and the while body, 2 x 32 B read and 32 B written in
  CMEM, runs its 5 trips."""
  assert hlo.space_bytes('(bf16[4,4]{1,0:S(3)}, f32[2]{0}, u32[]{:S(2)})') == {
      3: 32, 0: 8, 2: 4}
  assert hlo.memory_space_traffic(SPACES_HLO) == {0: 32 + 16 + 32,
                                                  3: 32 + 16 + 64 + 5 * 96}
  # Without XLA's trip count, the caller's.
  unknown = SPACES_HLO.replace(', backend_config={"known_trip_count":{"n":"5"}}', '')
  assert hlo.memory_space_traffic(unknown, loop_trips=3)[3] == 32 + 16 + 64 + 3 * 96
