"""Every registered op has an emitter in every backend and at least one parity case."""
from __future__ import annotations

from netdsl.backends.onnx.emitters import EMITTERS as ONNX_EMITTERS
from netdsl.backends.torch.emitters import EMITTERS as TORCH_EMITTERS
from netdsl.ir.registry import all_ops

from test_ops_parity import CASES, build  # tests/ is on sys.path (no package)


def test_every_op_has_a_torch_emitter():
    assert sorted(set(all_ops()) - set(TORCH_EMITTERS)) == []


def test_every_op_has_an_onnx_emitter():
    assert sorted(set(all_ops()) - set(ONNX_EMITTERS)) == []


def test_no_emitter_without_an_op():
    assert sorted((set(TORCH_EMITTERS) | set(ONNX_EMITTERS)) - set(all_ops())) == []


def test_every_op_has_a_parity_case():
    covered = {node.op for case in CASES for node in build(case).graph.nodes}
    assert sorted(set(all_ops()) - covered) == []
