"""The Python API's Session(parallel=N) asked from several threads (the README's example): each
thread's answer is the one a Session gives one question at a time, whatever the others ask about
(the same image, or another that shares the prompt's beginning), and the steps ran together."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from glmv_cli import GenerationOptions, Session
from tests.cli.conftest import slow_steps


def test_questions_from_threads_get_the_answers_asked_alone(tiny, media, monkeypatch):
    photos = [media[k] for k in ("png", "jpg", "png", "png2", "jpg", "png")]
    gen = GenerationOptions(temperature=0, max_new_tokens=16)
    alone = Session(tiny, dtype="float32")
    want = [alone.run("What is this?", [p], generation=gen).completion_ids for p in photos]
    slow_steps(monkeypatch)  # (decoding outlasts reading a photo, as with a real model)
    together = Session(tiny, dtype="float32", parallel=4)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda p: together.run("What is this?", [p], generation=gen).completion_ids, photos))
    assert got == want
    assert len({tuple(ids) for ids in want}) == 3  # (three images, three answers)
    stats = together.glmv.batch_stats()
    assert stats["widest"] >= 2 and stats["rows"] > stats["steps"]


def test_several_at_once_on_cuda_comes_with_a_note(tiny, monkeypatch):
    """On CUDA a lone request decodes in a CUDA graph and N together eagerly: asking for N says so
    (and points at the benchmark that measures both); elsewhere, or one at a time, nothing is said."""
    import torch

    from glmv_cli import loading

    assert Session(tiny, device="cpu", parallel=4).parallel_note() is None
    monkeypatch.setattr(loading, "pick_device", lambda device="auto": torch.device("cuda"))
    note = Session(tiny, parallel=4).parallel_note()
    assert note.startswith("--parallel 4 on CUDA") and "batch_decode_bench.py" in note
    assert Session(tiny, parallel=1).parallel_note() is None
