from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

_counter = itertools.count()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A fresh op name per test: names are unique per process."""
    test = request.node.name.split("[")[0].removeprefix("test_")
    return f"test::{test}_{next(_counter)}"


@pytest.fixture(autouse=True)
def seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)
