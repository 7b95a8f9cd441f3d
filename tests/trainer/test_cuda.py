"""The sync-free CUDA path. CI has no GPU: these skip there and run on a GPU machine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lossreport

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_logging_cuda_losses_never_synchronises_the_training_thread(runs_dir: Path) -> None:
    x = torch.randn(4096, 4096, device="cuda", requires_grad=True)
    with lossreport.start_run(runs_dir, model="m", hook="h", flush_every=100) as run:
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call below raises
        try:
            for step in range(300):
                loss = (x @ x).square().mean()
                run.log(step, mse_loss=loss, l1_loss=loss.to(torch.bfloat16), overall_loss=loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    history = run.get_loss_history()
    assert history.shape == (300, 4)
    expected = (x @ x).square().mean().item()
    assert history["mse_loss"].iloc[-1] == pytest.approx(expected, rel=1e-6)


@cuda
def test_cuda_losses_do_not_keep_their_graphs_alive(runs_dir: Path) -> None:
    with lossreport.start_run(runs_dir, model="m", hook="h", flush_every=10**6) as run:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        for step in range(50):
            weights = torch.randn(1024, 1024, device="cuda", requires_grad=True)
            run.log(step, mse_loss=(weights * weights).sum())  # the graph saves `weights`
        del weights
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() - before < 10 * 1024 * 1024
