"""Device choice: ``auto`` (CUDA when torch sees one, else CPU), ``cpu`` or ``cuda:N``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import InputError


def resolve_device(spec: str | None = "auto") -> torch.device:
    """Parse a device string; a CUDA request that torch cannot serve is a clear error."""
    s = (spec or "auto").strip().lower()
    if s == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        index = 0 if s == "cuda" else s.split(":", 1)[1]
        if not str(index).isdigit():
            raise InputError(f"device {spec!r}: expected cuda:N with N a number")
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index) >= n:
            built = torch.version.cuda or "none (CPU-only build)"
            raise InputError(
                f"device {spec!r} requested but torch sees {n} CUDA device(s) "
                f"(torch {torch.__version__}, CUDA build {built}). Use 'auto' or 'cpu', or install a "
                "CUDA build of torch that matches your driver (see README, 'GPU')."
            )
        return torch.device(f"cuda:{index}")
    raise InputError(f"device {spec!r} not understood: use auto, cpu or cuda:N")


def describe_device(device: torch.device) -> str:
    """Human-readable device name for logs."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch CPU threads (None/0: unchanged), then restore the count.

    The thread count is process-wide and changes the order of float reductions (results differ
    in the last bits), so work that sets it must not leave it changed for whatever runs next.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(before)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is the device running out of memory (CUDA's error, or its message from
    an older torch or another backend)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision name (``bf16``, ``fp16``); None for ``fp32``."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
