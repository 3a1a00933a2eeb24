"""Shared test setup: one torch thread (a busy 2-core box makes 2-thread runs 30x slower and flaky)."""

import torch

torch.set_num_threads(1)
