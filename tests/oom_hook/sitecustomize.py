"""Test hooks, on PYTHONPATH only in the tests that use them.

GLMV_TEST_OOM_ABOVE=N: the model's prefill of a prompt longer than N tokens fails as CUDA's
allocator fails (the exception and message torch raises), so a CPU-only machine can check how glmv
reports running out of memory and that it keeps working after (the question that fits is answered).

GLMV_TEST_FAIL_ABOVE=N: the prefill of a prompt longer than N tokens raises a RuntimeError, as a
bug would: an error no handler expects (glmv serve answers a 500 and keeps the connection).

GLMV_TEST_STEP_DELAY_MS=D: each decode step (one row or several) takes D ms more, as a real model's
does, so that questions asked together are decoding at the same time however fast the machine
prepares their attachments (the tiny test checkpoints decode a token in about a millisecond).

GLMV_TEST_LOAD_DELAY_S=S: loading the weights takes S seconds more, told to its progress as the
first half of the work, so that `glmv serve` is seen answering while it loads (serve/loading.py).

GLMV_TEST_PREFILL_DELAY_MS=D: each vision block, merger and decoder layer of a prompt's prefill
takes D ms more, so that reading a tiny checkpoint's prompt takes as long as a real model's on a CPU and its
progress shows (app/meter.py)."""

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

if os.environ.get("GLMV_TEST_FAIL_ABOVE"):
    from glmv_cli.model.glm4v import Glm4v

    _fail_limit, _unfailing_prefill = int(os.environ["GLMV_TEST_FAIL_ABOVE"]), Glm4v.prefill

    def _buggy_prefill(self, *args, **kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if ids.shape[-1] > _fail_limit:
            raise RuntimeError("a bug the test hook put in")
        return _unfailing_prefill(self, *args, **kwargs)

    Glm4v.prefill = _buggy_prefill

if os.environ.get("GLMV_TEST_STEP_DELAY_MS"):  # decode steps as slow as a real model's (batching tests)
    import time

    from glmv_cli.model.glm4v import Glm4v

    _delay = float(os.environ["GLMV_TEST_STEP_DELAY_MS"]) / 1000

    def _slowed(step):
        def slow(self, *args, **kwargs):
            time.sleep(_delay)
            return step(self, *args, **kwargs)

        return slow

    Glm4v.decode, Glm4v.decode_rows = _slowed(Glm4v.decode), _slowed(Glm4v.decode_rows)

if os.environ.get("GLMV_TEST_PREFILL_DELAY_MS"):  # a prefill as slow as a real model's on a CPU (meter tests)
    import time

    from glmv_cli.model.glm4v import Glm4v

    _piece_delay, _plain_prefill = float(os.environ["GLMV_TEST_PREFILL_DELAY_MS"]) / 1000, Glm4v.prefill

    def _slow_prefill(self, *args, progress=None, **kwargs):
        def slow(done, total):  # (told after each vision block, merger and decoder layer)
            time.sleep(_piece_delay)
            progress(done, total)

        return _plain_prefill(self, *args, progress=slow if progress is not None else None, **kwargs)

    Glm4v.prefill = _slow_prefill

if os.environ.get("GLMV_TEST_LOAD_DELAY_S"):  # loading as slow as a 9B model's from a disk (serve tests)
    import time

    import glmv_cli.api

    _load_delay, _plain_load = float(os.environ["GLMV_TEST_LOAD_DELAY_S"]), glmv_cli.api.load

    def _slow_load(*args, progress=None, **kwargs):
        from concurrent.futures import ThreadPoolExecutor

        def wait():
            for k in range(20):
                time.sleep(_load_delay / 20)
                if progress is not None:
                    progress(k + 1, 40)

        with ThreadPoolExecutor(1) as pool:  # (a thread the interpreter waits for at exit, as loading's readers)
            pool.submit(wait).result()
        return _plain_load(*args, progress=progress, **kwargs)

    glmv_cli.api.load = _slow_load
