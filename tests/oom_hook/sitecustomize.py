"""A test hook, on PYTHONPATH only in the out-of-memory tests: with GLMV_TEST_OOM_ABOVE=N the
model's prefill of a prompt longer than N tokens fails as CUDA's allocator fails (the exception
and message torch raises), so a CPU-only machine can check how glmv reports running out of memory
and that it keeps working after (the question that fits is answered)."""

import os

if os.environ.get("GLMV_TEST_OOM_ABOVE"):
    import torch

    from glmv_cli.model.glm4v import Glm4v

    _limit, _prefill = int(os.environ["GLMV_TEST_OOM_ABOVE"]), Glm4v.prefill

    def _failing_prefill(self, *args, **kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if ids.shape[-1] > _limit:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 7.91 GiB. GPU 0 has a total capacity of 11.62 GiB of which "
                "1.20 GiB is free. Of the allocated memory 9.98 GiB is allocated by PyTorch.")
        return _prefill(self, *args, **kwargs)

    Glm4v.prefill = _failing_prefill
