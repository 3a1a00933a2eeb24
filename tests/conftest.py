"""Shared test setup: one torch thread (a busy 2-core box makes 2-thread runs 30x slower and flaky),
and the `glmv ask` conversation kept for -c in a folder of the test run's own, not the user's."""

import os
import tempfile

import pytest
import torch

torch.set_num_threads(1)
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="glmv-test-state-")


# Tests marked `gpu` need CUDA and are skipped without it. GLMV_GPU_TEST_DEVICE=cpu runs them on the
# CPU instead (the parts that only exist on CUDA, such as graph capture, skip themselves): a dry run of
# the GPU checks' logic on a machine without a GPU, before spending device time on them.
GPU_TEST_DEVICE = os.environ.get("GLMV_GPU_TEST_DEVICE", "cuda")


def pytest_collection_modifyitems(config, items):
    if GPU_TEST_DEVICE != "cuda" or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (GLMV_GPU_TEST_DEVICE=cpu: a dry run on the CPU)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu():
    """The device the `gpu` tests run on: cuda, or the CPU for a dry run."""
    return torch.device(GPU_TEST_DEVICE)
