"""The model's forward pass replayed as a CUDA graph: one launch per batch instead of one per kernel.

A GLF-CR pass over a batch of tiles is hundreds of small kernels (window attention, dynamic
filters, norms); on a fast GPU the Python thread that launches them one by one can be slower
than the GPU that runs them. A CUDA graph records the launches of one pass once and replays
them with a single call. Graphs need fixed shapes, and a scene's tiles all have the same size,
so every full batch of a run has one shape: that shape is captured, after ``after`` eager
calls of it (they settle cuDNN's algorithm choices and the allocator), and replayed from then
on. The last, partial batch is copied into the first rows of the graph's inputs and replayed
too (the other rows hold whatever the previous batch left; their results are dropped), so no
eager pass needs memory beside the graph's. Other shapes run eagerly. A replay runs the same
kernels on the same data, so its result equals the eager pass.

If capture fails (a model that waits for the host inside its pass, no memory left for the
graph's own pool), the run continues eagerly and says why once. An out-of-memory error in an
eager call releases the graph, whose memory pool would otherwise stay reserved, before the
pipeline halves the batch.

Replays write into the same output tensor each time: the caller must have queued whatever reads
it (the pipeline's non-blocking copy to pinned memory, on the same stream) before the next call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .device import is_oom

Forward = Callable[[tuple[torch.Tensor, ...]], torch.Tensor]


@dataclass
class Graph:
    """A captured pass: copy new inputs into ``inputs``, call ``replay``, read ``output``."""

    inputs: tuple[torch.Tensor, ...]
    output: torch.Tensor
    replay: Callable[[], None]


Capture = Callable[[Forward, tuple[torch.Tensor, ...]], Graph]


def cuda_capture(forward: Forward, example: tuple[torch.Tensor, ...]) -> Graph:
    """Record ``forward`` on inputs shaped like ``example`` (CUDA tensors) as a CUDA graph."""
    static = tuple(t.clone() for t in example)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # torch asks for a warm-up on a side stream before capture
        forward(static)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    # the eager passes' cached activations go back to the driver, so the graph's private pool
    # can take their place instead of adding to them
    torch.cuda.empty_cache()
    graph = torch.cuda.CUDAGraph()
    # thread_local: the pipeline's writer thread waits on CUDA events and frees pinned buffers
    # while this thread captures; in the default (global) mode those calls would break the capture
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        output = forward(static)
    return Graph(static, output, graph.replay)


class GraphedForward:
    """``forward`` with the run's full-batch shape replayed from a graph (see the module text).

    Args:
        forward: the eager batched call (inputs on the device → prediction).
        note: receives one line when a graph is captured, refused or released (the run's log).
        after: eager calls of a shape before it is captured (≥ 1: the first call warms up).
        capture: records a :class:`Graph`; :func:`cuda_capture` unless a test injects another.
    """

    def __init__(self, forward: Forward, note: Callable[[str], None] | None = None, after: int = 2,
                 capture: Capture = cuda_capture) -> None:
        self.forward, self.after, self.capture = forward, max(1, after), capture
        self.note = note or (lambda _line: None)
        self.shape: tuple[tuple[int, ...], ...] | None = None
        self.seen = 0
        self.graph: Graph | None = None
        self.off = False
        self.replays = 0

    def __call__(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        key = tuple(tuple(t.shape) for t in inputs)
        if self.graph is not None and self._fits(key):
            n = key[0][0]
            with torch.inference_mode():  # the static inputs are inference tensors
                for static, new in zip(self.graph.inputs, inputs, strict=True):
                    static[:n].copy_(new, non_blocking=True)
            self.graph.replay()
            self.replays += 1
            out = self.graph.output
            return out if n == out.shape[0] else out[:n]
        if self.off or self.graph is not None:
            return self._eager(inputs)
        if key != self.shape:  # only the shape that keeps coming back is worth a graph
            self.shape, self.seen = key, 0
        self.seen += 1
        if self.seen <= self.after:
            return self._eager(inputs)
        try:
            self.graph = self.capture(self.forward, inputs)
        except Exception as exc:
            self.off = True
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            self.note(f"CUDA graph not used ({first}); the model runs eagerly")
            return self._eager(inputs)
        self.note(f"CUDA graph captured for batches of {key[0][0]} tiles; later full batches replay it")
        return self(inputs)

    def _fits(self, key: tuple[tuple[int, ...], ...]) -> bool:
        """The captured shape, or the same with fewer tiles (every input's first axis is the batch)."""
        full = self.shape
        return full is not None and len(key) == len(full) and all(
            k[1:] == f[1:] and 0 < k[0] <= f[0] for k, f in zip(key, full, strict=True))

    def _eager(self, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        try:
            return self.forward(inputs)
        except RuntimeError as exc:
            if is_oom(exc) and self.graph is not None:
                self.release()
                self.note("out of memory: the CUDA graph is released and the model runs eagerly")
            raise

    def release(self) -> None:
        """Free the graph (its memory pool goes back to the allocator) and stop capturing."""
        self.graph, self.off = None, True
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
