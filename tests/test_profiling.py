"""``capslab.profiling``: the time and peak-memory measurement shared by bench and memory."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from capslab import profiling
from capslab.profiling import (
    median_seconds,
    native_stderr_silenced,
    persistent_bytes,
    profiler_peak_bytes,
    saved_activation_bytes,
    tensor_bytes,
    training_step_peak_bytes,
)

CPU = torch.device("cpu")


def test_profiler_peak_counts_live_bytes_exactly():
    def work():
        a = torch.empty(1_000_000, dtype=torch.uint8)
        b = torch.empty(2_000_000, dtype=torch.uint8)
        del a
        c = torch.empty(500_000, dtype=torch.uint8)
        del b, c

    assert profiler_peak_bytes(work) == 3_000_000  # a and b together, not a + b + c


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(100)  # 400 bytes
    b = torch.zeros(50, dtype=torch.uint8)
    assert tensor_bytes([a, a[10:], a.view(10, 10), b, None, 3]) == 450
    assert tensor_bytes([]) == 0


def _linear_after_adam_step() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 4)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_persistent_bytes_are_parameters_gradients_and_adam_state():
    model, optimizer = _linear_after_adam_step()
    param_bytes = tensor_bytes(model.parameters())
    assert param_bytes == 15 * 4
    steps = tensor_bytes([st["step"] for st in optimizer.state.values()])
    # parameters, their gradients and Adam's two moments, plus the step counters
    assert persistent_bytes(model, optimizer) == 4 * param_bytes + steps
    optimizer.zero_grad(set_to_none=True)
    assert persistent_bytes(model, optimizer) == 3 * param_bytes + steps


def test_saved_activation_bytes_excludes_the_parameters():
    w = nn.Parameter(torch.randn(10))

    def forward() -> torch.Tensor:
        return (w * w).exp().sum()  # mul saves w (twice), exp saves its 40-byte result

    assert saved_activation_bytes(forward, exclude=[w]) == 40
    assert saved_activation_bytes(forward, exclude=[]) == 80


def test_median_seconds_is_the_median_after_the_warmup(monkeypatch):
    calls = []
    clock = iter([0.0, 1.0, 1.0, 4.0, 4.0, 6.0])  # durations 1, 3, 2
    monkeypatch.setattr(profiling.time, "perf_counter", lambda: next(clock))
    assert median_seconds(lambda: calls.append(1), steps=3, warmup=2, device=CPU) == 2.0
    assert len(calls) == 5


def test_interleaved_rounds_rotate_and_take_each_median(monkeypatch):
    order = []
    # a fake clock that advances by the duration the called function stands for
    now = [0.0]
    durations = {"a": [1.0, 5.0, 2.0], "b": [10.0, 30.0, 20.0]}

    def fn(name):
        def call():
            order.append(name)
            if len(order) > 2:  # after one warm-up call each
                now[0] += durations[name].pop(0)
        return call

    monkeypatch.setattr(profiling.time, "perf_counter", lambda: now[0])
    got = profiling.interleaved_median_seconds([fn("a"), fn("b")], steps=3, warmup=1, device=CPU)
    assert got == [2.0, 20.0]
    # warm-up a, b; then rounds a b / b a / a b: the first function changes every round
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b"]


def test_interleaved_blocks_skip_the_lead_call_and_average_the_rest(monkeypatch):
    now = [0.0]
    order = []
    # per function: the lead call of a block is slow (cold caches), the block's calls are not
    costs = {"a": iter([0, 9, 1, 3, 9, 2, 2]), "b": iter([0, 9, 4, 4, 9, 6, 8])}

    def fn(name):
        def call():
            order.append(name)
            now[0] += next(costs[name])
        return call

    monkeypatch.setattr(profiling.time, "perf_counter", lambda: now[0])
    got = profiling.interleaved_median_seconds([fn("a"), fn("b")], steps=2, warmup=1, device=CPU,
                                               block=2)
    # round 1: a's block (1 + 3) / 2, b's (4 + 4) / 2; round 2 starts with b: (6 + 8) / 2, a's (2 + 2) / 2
    assert got == [2.0, 5.5]  # medians of (2, 2) and (4, 7)
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3
    with pytest.raises(ValueError, match="block"):
        profiling.interleaved_median_seconds([fn("a")], steps=1, warmup=0, device=CPU, block=0)


def test_block_seconds_times_the_block_after_its_lead_calls(monkeypatch):
    now = [0.0]
    costs = iter([7.0, 5.0, 1.0, 2.0, 3.0])  # two slow lead calls, then the block

    def call():
        now[0] += next(costs)

    monkeypatch.setattr(profiling.time, "perf_counter", lambda: now[0])
    assert profiling.block_seconds(call, 3, CPU, lead=2) == 2.0
    costs = iter([4.0])
    assert profiling.block_seconds(call, 1, CPU, lead=0) == 4.0


def test_interleaved_rounds_take_the_median_of_each_timer():
    samples = {"a": iter([3.0, 1.0, 2.0]), "b": iter([9.0, 7.0, 8.0])}
    order = []

    def timer(name):
        def sample():
            order.append(name)
            return next(samples[name])
        return sample

    assert profiling.interleaved_rounds([timer("a"), timer("b")], steps=3) == [2.0, 8.0]
    assert order == ["a", "b", "b", "a", "a", "b"]


def test_training_step_peak_holds_the_start_state_and_the_new_gradients():
    model, optimizer = _linear_after_adam_step()
    batch = (torch.rand(32, 4),)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model(batch[0]).pow(2).sum().backward()
        optimizer.step()

    optimizer.zero_grad(set_to_none=True)
    start = persistent_bytes(model, optimizer) + tensor_bytes(batch)
    peak = training_step_peak_bytes(train_step, model, optimizer, batch, CPU)
    # the gradients are allocated during the step and still alive at its end
    assert peak >= start + tensor_bytes(model.parameters())
    assert all(p.grad is not None for p in model.parameters())


def test_native_stderr_silenced_hides_writes_to_fd_2(capfd):
    with native_stderr_silenced():
        os.write(2, b"hidden\n")
    os.write(2, b"shown\n")
    assert capfd.readouterr().err == "shown\n"
