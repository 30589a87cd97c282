"""Scale-out on torch.distributed and across processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, Dataset

from npgrad_scipy import Conv2d, correlate2d

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]


def test_ddp_gradients_equal_one_process_and_the_example_trains() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "examples" / "ddp_train.py"),
            "--steps",
            "8",
            "--check-gradients",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gradients equal to one process on the whole batch: OK" in done.stdout
    assert "rank 0 of 2" in done.stdout
    assert "Grad strides do not match" not in done.stderr


class Blurred(Dataset[torch.Tensor]):
    """Each item computed with an npgrad op, in the loader's worker processes."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> torch.Tensor:
        image = torch.from_numpy(np.random.default_rng(index).standard_normal((10, 10)))
        return correlate2d(image, torch.full((3, 3), 1 / 9, dtype=torch.float64), mode="same")


def test_dataloader_workers_call_ops() -> None:
    loaded = torch.cat(list(DataLoader(Blurred(), batch_size=4, num_workers=2)))
    expected = torch.stack([Blurred()[i] for i in range(8)])
    torch.testing.assert_close(loaded, expected)


def _apply(layer: torch.nn.Module, x: torch.Tensor, queue: mp.SimpleQueue) -> None:
    # As a NumPy array: pickled by value, not through shared memory the child takes with it.
    queue.put(layer(x).detach().numpy())


def test_a_layer_sent_to_a_spawned_process_works() -> None:
    layer = Conv2d(1, 2, 3)
    x = torch.randn(1, 1, 6, 6)
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    process = context.Process(target=_apply, args=(layer, x, queue))
    process.start()
    result = queue.get()
    process.join(timeout=120)
    assert process.exitcode == 0
    torch.testing.assert_close(torch.from_numpy(result), layer(x).detach())


def test_an_op_unpickles_in_a_process_that_never_imported_its_plugin() -> None:
    from npgrad_scipy import conv2d

    payload = pickle.dumps(conv2d)
    code = "import pickle, sys\nop = pickle.loads(sys.stdin.buffer.read())\nprint(op.name)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], input=payload, capture_output=True, check=True, timeout=120
    )
    assert done.stdout.decode().strip() == "scipy::conv2d"
