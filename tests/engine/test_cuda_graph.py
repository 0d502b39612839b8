"""CUDA-graph replay logic (engine/inference/cuda_graph.py), run on the CPU with a stand-in capture.

The stand-in records nothing: its "replay" reruns the eager call on the static inputs, so these
tests check what GraphedForward decides (which shape is captured and when, that new inputs are
copied in, what runs eagerly, what happens when capture or memory fails), not CUDA itself.
The real capture is checked against eager passes in tests/engine/test_gpu.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from cloudrm_engine.inference.cuda_graph import Graph, GraphedForward
from cloudrm_engine.inference.predictor import model_forward, use_cuda_graphs
from cloudrm_engine.models import model_card


class Net:
    """Forward that counts its calls: y = 2 x + s.mean()."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        self.calls += 1
        x, s = inputs
        return 2 * x + s.mean(dim=(1, 2, 3), keepdim=True)


def reference(inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    x, s = inputs
    return 2 * x + s.mean(dim=(1, 2, 3), keepdim=True)


class StandIn:
    """A capture that keeps static buffers and replays by rerunning the call on them."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail, self.captured = fail, 0

    def __call__(self, forward, example) -> Graph:
        if self.fail is not None:
            raise self.fail
        self.captured += 1
        static = tuple(t.clone() for t in example)
        out = forward(static)

        def replay() -> None:
            out.copy_(forward(static))

        return Graph(static, out, replay)


def batch(b: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 8, 8, generator=g), torch.rand(b, 2, 8, 8, generator=g)


def test_full_batches_replay_after_warm_up_and_the_last_partial_batch_too():
    net, cap, notes = Net(), StandIn(), []
    f = GraphedForward(net, notes.append, after=2, capture=cap)
    outs = []
    for seed in range(5):  # five full batches of 4, then the last partial batch of 2
        xs = batch(4, seed)
        outs.append(f(xs))
        assert torch.equal(outs[-1], reference(xs)), seed  # new inputs were copied in each time
    last = batch(2, 99)  # the last, partial batch: its rows of the graph, the rest dropped
    got = f(last)
    assert got.shape[0] == 2 and torch.equal(got, reference(last))
    assert cap.captured == 1
    assert f.replays == 4  # calls 3-6; calls 1-2 were eager warm-ups
    calls = net.calls
    other = (torch.rand(4, 3, 16, 16), torch.rand(4, 2, 16, 16))  # another tile size: eager
    assert torch.equal(f(other), reference(other)) and f.replays == 4 and net.calls == calls + 1
    assert outs[2] is outs[3] is outs[4]  # replays reuse the output: the caller copies it out before the next call
    assert notes == ["CUDA graph captured for batches of 4 tiles; later full batches replay it"]


def test_a_shape_is_captured_only_once_it_repeats():
    cap = StandIn()
    f = GraphedForward(Net(), after=2, capture=cap)
    for b in (4, 2, 4, 2):  # never the same shape three times in a row
        f(batch(b, b))
    assert cap.captured == 0 and f.graph is None


def test_capture_failure_leaves_the_run_eager_and_says_why_once():
    net, notes = Net(), []
    cap = StandIn(fail=RuntimeError("operation not permitted when stream is capturing\nmore"))
    f = GraphedForward(net, notes.append, after=1, capture=cap)
    for seed in range(4):
        xs = batch(4, seed)
        assert torch.equal(f(xs), reference(xs))
    assert f.off and f.graph is None and f.replays == 0
    assert notes == ["CUDA graph not used (operation not permitted when stream is capturing); the model runs eagerly"]
    assert net.calls == 4  # every call ran eagerly; capture was not retried


def test_out_of_memory_in_an_eager_call_releases_the_graph():
    calls = {"n": 0}

    def forward(inputs):
        calls["n"] += 1
        if inputs[0].shape[0] == 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return reference(inputs)

    notes: list[str] = []
    f = GraphedForward(forward, notes.append, after=1, capture=StandIn())
    f(batch(4, 0))
    f(batch(4, 1))
    assert f.graph is not None
    with pytest.raises(torch.cuda.OutOfMemoryError):
        f(batch(5, 2))  # larger than the graph: eager; the pipeline halves the batch after this
    assert f.graph is None and f.off
    assert notes[-1] == "out of memory: the CUDA graph is released and the model runs eagerly"
    xs = batch(4, 3)
    assert torch.equal(f(xs), reference(xs)) and f.replays == 1  # eager from now on


def test_graphs_are_cuda_only():
    net = torch.nn.Conv2d(3, 3, 1)
    f = model_forward(net, torch.device("cpu"), "fp32", graphs=True)
    assert not isinstance(f, GraphedForward)
    card = model_card("glf_cr")
    on = dataclasses.replace(card, defaults={**card.defaults, "cuda_graphs": True})
    assert use_cuda_graphs(torch.device("cpu"), on) is False
    assert use_cuda_graphs(torch.device("cuda:0"), on) is True
    assert use_cuda_graphs(torch.device("cuda:0"), card) is bool(card.defaults.get("cuda_graphs", False))
