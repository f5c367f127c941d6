"""A training step's gradient computation run faster: in bfloat16 autocast, compiled into fused kernels, or replayed
as one CUDA graph instead of hundreds of kernel launches (or all: the graph replays the compiled kernels)."""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Sequence

import torch


@contextlib.contextmanager
def distribution_checks_off() -> Iterator[None]:
    """Skip torch.distributions' argument checks, whose ``.all()`` is a host round trip a CUDA graph cannot hold."""
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def compiled(step: Callable[..., Sequence[torch.Tensor]]) -> Callable[..., Sequence[torch.Tensor]]:
    """``step`` compiled by ``torch.compile`` (fixed shapes), called with torch.distributions' argument checks off.

    The checks' host round trips would cut the compiled graph in pieces. The
    first call compiles; ``torch.autograd.grad`` in ``step`` splits it in two
    compiled parts (the losses with their backward, then what follows).
    """
    compiled_step = torch.compile(step, dynamic=False)

    def run(*inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        with distribution_checks_off():
            return compiled_step(*inputs)

    return run


def in_bf16_autocast(
    step: Callable[..., Sequence[torch.Tensor]], device_type: str
) -> Callable[..., Sequence[torch.Tensor]]:
    """``step`` run under bfloat16 autocast: matmuls in bfloat16, losses, reductions, exp and log in float32.

    Parameters and the gradients ``step`` returns stay float32. Autocast's
    cache of cast weights is off: a compiled step or a CUDA graph must cast
    the weights as the optimizer left them, not reuse casts from an earlier call.
    """

    def run(*inputs: torch.Tensor) -> Sequence[torch.Tensor]:
        with torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False):
            return step(*inputs)

    return run


def _probe(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x) * 2.0 + 1.0


def check_compiler_works(device: torch.device) -> None:
    """Raise a RuntimeError naming ``torch_compile`` unless ``torch.compile`` builds kernels for ``device`` here.

    Its kernels need a C++ compiler (CPU) or Triton (CUDA). A tiny function
    compiled at set-up reports a missing one before the run's first
    environment step, not at its first update, minutes later.
    """
    try:
        torch.compile(_probe, dynamic=False)(torch.zeros(4, device=device))
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"torch_compile=True (train.torch_compile) on {device}, but torch.compile cannot build kernels on this "
            f"machine: {first_line}. Install what it names (a C++ compiler such as g++ for CPU kernels, Triton for "
            "CUDA ones) or set train.torch_compile=false"
        ) from error


class GraphedStep:
    """``step(*inputs) -> tuple of tensors``, captured once as a CUDA graph and replayed on new inputs.

    The first ``warmup`` calls run ``step`` eagerly on a side stream (lazy
    allocations happen there, as CUDA graph capture requires); the next call
    captures it, and every call from then on copies its inputs into the
    graph's static input tensors and replays the graph. Every call computes
    ``step`` exactly once: capture records without running, then replays.

    ``step`` must keep its input shapes, make no host round trips (no
    ``.item()``, no branching on tensor values) and only read, never
    reallocate, the tensors outside its inputs (parameters are updated in
    place by optimizers and ``load_state_dict``). Random draws inside it are
    fresh on every replay. The returned tensors are the graph's static
    outputs: valid until the next call.

    :param step: the function to capture
    :param warmup: eager calls before capture
    """

    def __init__(self, step: Callable[..., Sequence[torch.Tensor]], warmup: int = 3):
        self.step = step
        self.warmup = warmup
        self.calls = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_inputs: tuple[torch.Tensor, ...] = ()
        self.static_outputs: tuple[torch.Tensor, ...] = ()

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.graph is None and self.calls < self.warmup:
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                outputs = tuple(self.step(*inputs))
            torch.cuda.current_stream().wait_stream(side)
            return outputs
        if self.graph is None:
            self.static_inputs = tuple(x.clone() for x in inputs)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph), distribution_checks_off():
                self.static_outputs = tuple(self.step(*self.static_inputs))
        for static, x in zip(self.static_inputs, inputs):
            if static.shape != x.shape:
                raise ValueError(
                    f"input of shape {tuple(x.shape)}, but the graph was captured with {tuple(static.shape)}"
                )
            static.copy_(x)
        self.graph.replay()
        return self.static_outputs
