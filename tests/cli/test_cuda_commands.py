"""Every command on a GPU, as a user runs it (marked `gpu`: skipped without CUDA;
GLMV_GPU_TEST_DEVICE=cpu dry-runs them on the CPU): the demo model's README examples answer the
same on the device as on the CPU, the tiny random checkpoint gives the same greedy ids there, and
int8, --compile, chat and bench work on the device."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.cli.conftest import random_image, run_glmv
from tests.inputs.media import write_pdf

pytestmark = pytest.mark.gpu
ROOT = Path(__file__).resolve().parents[2]
DEMO = [
    ("ask", "examples/shapes.png", "What color is the circle?"),
    ("ask", "examples/number.png", "What number is written in the image?"),
    ("pdf", "examples/cards.pdf", "On which page is the blue square?"),
    ("video", "examples/clip.mp4", "At which second does the yellow triangle appear?"),
]


def device_args(gpu) -> list[str]:
    return ["--device", gpu.type]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """An image and a PDF (not the shared `media` fixture: it also encodes a video, and the GPU
    machine's image may lack PyAV)."""
    root = tmp_path_factory.mktemp("gpu-files")
    return {"png": random_image(root / "a.png", 120, 80, seed=1), "jpg": random_image(root / "c.jpg", 100, 100),
            "pdf": write_pdf(root / "doc.pdf", [(200.0, 150.0)] * 3)}


@pytest.mark.parametrize("command, path, question", DEMO)
def test_demo_examples_answer_on_the_device_as_on_the_cpu(gpu, command, path, question):
    if command == "video" and importlib.util.find_spec("av") is None:
        pytest.skip("PyAV is not installed here")
    args = (command, ROOT / path, question, "--model", "demo", "--dtype", "float32", "--json")
    cpu, dev = run_glmv(*args, "--device", "cpu"), run_glmv(*args, *device_args(gpu))
    assert cpu.code == dev.code == 0, dev.err
    assert dev.json["answer"] == cpu.json["answer"] and dev.json["thinking"] == cpu.json["thinking"]
    if path.endswith("shapes.png"):
        assert dev.json["answer"] == "green"  # the README's first example


def test_tiny_checkpoint_same_ids_on_both_devices(tiny, files, gpu):
    args = ("ask", files["png"], files["pdf"], "Describe these.", "--model", tiny, "--dtype", "float32",
            "--max-new-tokens", "24", "--json")
    cpu, dev = run_glmv(*args, "--device", "cpu"), run_glmv(*args, *device_args(gpu))
    assert cpu.code == dev.code == 0, dev.err
    assert dev.json["completion_ids"] == cpu.json["completion_ids"]


def test_an_answer_format_holds_on_the_device_as_on_the_cpu(tiny, files, gpu):
    # the masks come from the host each token (no token queued ahead): the same ids as on the CPU
    schema = '{"type": "object", "properties": {"n": {"type": "integer", "maximum": 99}}, "required": ["n"]}'
    args = ("ask", files["png"], "How many?", "--model", tiny, "--dtype", "float32", "--max-new-tokens", "40",
            "--think-budget", "3", "--schema", schema, "--json")
    cpu, dev = run_glmv(*args, "--device", "cpu"), run_glmv(*args, *device_args(gpu))
    assert cpu.code == dev.code == 0, dev.err
    assert dev.json["completion_ids"] == cpu.json["completion_ids"]
    assert set(json.loads(dev.json["answer"])) == {"n"}



def test_logprobs_on_the_device_are_the_cpus(gpu):
    # read from each step's logits before the next step is queued (CUDA graph on the device)
    args = ("ask", ROOT / "examples" / "shapes.png", "What color is the circle?", "--model", "demo", "--dtype",
            "float32", "--logprobs", "3", "--json")
    cpu, dev = run_glmv(*args, "--device", "cpu"), run_glmv(*args, *device_args(gpu))
    assert cpu.code == dev.code == 0, dev.err
    assert [t["token"] for t in dev.json["logprobs"]] == [t["token"] for t in cpu.json["logprobs"]]
    assert [t["logprob"] for t in dev.json["logprobs"]] == pytest.approx(
        [t["logprob"] for t in cpu.json["logprobs"]], abs=1e-3)

@pytest.mark.parametrize("flags", [["--quantize", "int8"], ["--quantize", "int4"], ["--quantize", "int8", "--compile"]])
# (--compile alone: tests/model/test_cuda.py, in process; each compiling CLI run costs the device call ~30 s)
def test_quantized_and_compiled_run_on_the_device(tiny, files, gpu, flags):
    run = run_glmv("ask", files["jpg"], "What is this?", "--model", tiny, *device_args(gpu), *flags,
                   "--max-new-tokens", "16", "--json", timeout=600)
    assert run.code == 0, run.err
    assert run.json["usage"]["completion_tokens"] > 0


def test_scripted_answer_and_chat_on_the_device(scripted, files, gpu):
    from tests.cli.crafted import ANSWER

    run = run_glmv("ask", files["png"], "Where is the blue square?", "--model", scripted, *device_args(gpu))
    assert (run.code, run.out) == (0, ANSWER + "\n"), run.err
    chat = run_glmv("chat", "--model", scripted, *device_args(gpu), input="first\nsecond\n")
    assert chat.code == 0, chat.err
    assert chat.out.count(ANSWER) == 2


def test_bench_runs_on_the_device(tmp_path, gpu):
    run = run_glmv("bench", "--shape", "tiny", "--device", gpu.type, "--new-tokens", "8", "--image", "112",
                   "--cache", tmp_path, "--quantize", "int8", timeout=600)
    assert run.code == 0, run.err
    report = json.loads(run.out.strip().splitlines()[-1])
    assert report["device"].startswith(gpu.type) and report["ours"]["decode_tok_s"] > 0
    assert report["quantization_accuracy"]["top1_agreement"] >= 0.5
