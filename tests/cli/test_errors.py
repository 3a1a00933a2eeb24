"""Exit codes and messages for each class of failure: one line on stderr, no traceback (unless
--debug), nothing on stdout, and bad input caught before the weights are loaded."""

from __future__ import annotations

import json
import zipfile

import pytest

from tests.cli.conftest import hooked_env, random_image, run_glmv
from tests.cli.crafted import ANSWER


def one_line_error(run, code: int, *fragments: str) -> None:
    assert run.code == code, (run.code, run.err)
    assert run.out == ""
    assert run.err.startswith("glmv: error: ") and run.err.count("\n") == 1, run.err
    assert "Traceback" not in run.err
    for fragment in fragments:
        assert fragment in run.err, run.err


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, media):
    root = tmp_path_factory.mktemp("bad")
    (root / "archive.zip").write_bytes(b"")
    with zipfile.ZipFile(root / "archive.zip", "w") as z:
        z.writestr("a.txt", "hello")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 4)
    (root / "broken.png").write_bytes(media["png"].read_bytes()[:60])
    (root / "empty.jpg").write_bytes(b"")
    broken_model = root / "broken-model"
    broken_model.mkdir()
    (broken_model / "config.json").write_text("{not json")
    (root / "list-config").mkdir()
    (root / "list-config" / "config.json").write_text("[1, 2]")
    (root / "no-text-config").mkdir()
    (root / "no-text-config" / "config.json").write_text(json.dumps({"model_type": "glm4v", "vision_config": {}}))
    return root


@pytest.mark.parametrize("args,fragments", [
    (["ask", "missing.png", "what?"], ["missing.png: no such file"]),
    (["ask", "{bad}/archive.zip", "what?"], ["application/zip, which glmv cannot read"]),
    (["ask", "{bad}/blob.bin", "what?"], ["application/octet-stream, which glmv cannot read"]),
    (["ask", "{bad}/broken.png", "what?"], ["broken.png"]),
    (["ask", "{bad}/empty.jpg", "what?"], ["empty.jpg is empty"]),
    (["ask", "{bad}", "what?"], ["is a directory"]),
    (["pdf", "{pdf}", "--pages", "7-9"], ["page 9 is out of range", "3 pages"]),
    (["pdf", "{pdf}", "--pages", "2-x"], ["bad page selection"]),
    (["pdf", "{png}"], ["image/png, not a PDF"]),
    (["video", "{pdf}"], ["application/pdf, not a video"]),
    (["video", "{mp4}", "--start", "30"], ["past the end"]),
    (["ask", "q", "--max-new-tokens", "5000"], ["over the 4,096-token context"]),
    (["ask", "{png}", "q", "--max-context", "20"], ["over the 20-token context"]),
    (["ask", "q", "--max-context", "100000"], ["--max-context 100,000 is over the model's context (4,096 tokens)"]),
    (["pdf", "{pdf}", "q", "--max-new-tokens", "4090"], ["--max-new-tokens 4,090 leaves no room for the attachments",
                                                        "allow fewer new tokens"]),
    (["ask"], ["nothing to ask"]),
    (["ask", "q", "--device", "cuda"], ["no CUDA device"]),
    (["info", "--device", "cuda"], ["no CUDA device"]),
    (["ask", "q", "--repetition-penalty", "0"], ["give more than 0 (1 is off)"]),
    (["ask", "q", "--no-think", "--think-budget", "5"], ["give one of them"]),
    (["video", "{mp4}", "--start", "-5"], ["--start -5s is before the video begins"]),
    (["video", "{mp4}", "--start", "1", "--end", "0.5"], ["--end 0.5s is not after --start 1s"]),
    (["info", "--device", "mps"], ["Metal backend is not available"]),
    (["ask", "q", "--json", "--jsonl"], ["choose one of --json and --jsonl"]),
    (["ask", "q", "--json", "-x"], ["--extract prints the answer's code block as plain text"]),
    (["ask", "q", "--schema", ""], ["--schema is empty (an unset shell variable?)"]),
    (["ask", "q", "--regex", " "], ["--regex is empty"]),
    (["ask", "q", "--grammar", ""], ["--grammar is empty"]),
    (["ask", "{png}", "q", "--draw-boxes", "{bad}/boxes.txt"], ["not an image file name Pillow can write"]),
    (["ask", "{png}", "q", "--draw-boxes", "{bad}/no/boxes.png"], ["the folder", "does not exist"]),
    (["ask", "{pdf}", "q", "--draw-boxes", "{bad}/boxes.png"], ["draws on the (first) image attached"]),
])
def test_bad_input_exits_2(scripted, media, bad_files, args, fragments):
    subs = {"bad": bad_files, "pdf": media["pdf"], "png": media["png"], "mp4": media["mp4"]}
    args = [a.format(**subs) for a in args]
    if "--model" not in args:
        args += ["--model", str(scripted)]
    one_line_error(run_glmv(*args), 2, *fragments)


def test_usage_errors_exit_2_with_one_line(scripted):
    """A bad option value, an unknown option or command, a missing argument: one line naming it
    (not a box of a usage message), exit code 2."""
    one_line_error(run_glmv("ask", "q", "--model", scripted, "--temperature", "hot"), 2,
                   "Invalid value for '--temperature'", "(glmv ask -h lists the options)")
    one_line_error(run_glmv("ask", "q", "--max-new-tokens", "0"), 2, "'--max-new-tokens'", "greater than or equal to 1")
    one_line_error(run_glmv("ask", "q", "--no-such-option"), 2, "No such option: --no-such-option")
    one_line_error(run_glmv("pdf"), 2, "Missing argument 'FILE'", "(glmv pdf -h lists the options)")
    one_line_error(run_glmv("nosuch"), 2, "No such command 'nosuch'")
    assert run_glmv("ask", "-h").code == 0 and run_glmv("--help").code == 0


@pytest.mark.parametrize("model,fragment", [
    ("{tmp}/nowhere", "no checkpoint folder"),
    ("{bad}/broken-model", "config.json"),
    ("{bad}/list-config", "config.json holds a list, not an object"),
    ("{bad}/no-text-config", "config.json has no text_config"),
    ("{png}", "is a file"),
    ("nobody/no-such-model", "hf download nobody/no-such-model"),
])
def test_model_problems_exit_3(media, bad_files, tmp_path, model, fragment):
    model = model.format(tmp=tmp_path, bad=bad_files, png=media["png"])
    one_line_error(run_glmv("ask", "q", "--model", model), 3, fragment)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_an_unreadable_generation_config_is_said_once_and_passed_over(scripted, tmp_path, text):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(scripted, model)
    (model / "generation_config.json").write_text(text)
    run = run_glmv("ask", "Where?", "--model", model, "-R")
    assert run.code == 0 and run.out.strip() == ANSWER, run.err
    assert run.err.count("ignoring unreadable") == 1


def test_debug_shows_the_traceback(tmp_path):
    run = run_glmv("ask", "q", "--model", tmp_path / "nowhere", "--debug")
    assert run.code != 0 and "Traceback" in run.err and "ModelError" in run.err


def test_other_failures_exit_1_with_one_line(monkeypatch, capsys):
    """An unexpected exception: exit 1, its type and message on one line, a hint about --debug."""
    import sys

    from glmv_cli import cli

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(cli, "app", boom)
    monkeypatch.setattr(sys, "argv", ["glmv", "ask", "q"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == "glmv: error: RuntimeError: disk on fire (run with --debug for the traceback)\n"


def test_bad_input_fails_before_loading_weights(scripted, media, tmp_path):
    """--jsonl shows progress events: a bad page range, or a --draw-boxes that could not be
    written, never gets to 'loading weights'."""
    run = run_glmv("pdf", media["pdf"], "--pages", "5", "--model", scripted, "--jsonl")
    assert run.code == 2
    assert "loading weights" not in run.out + run.err
    run = run_glmv("ask", media["png"], "q", "--draw-boxes", tmp_path / "b.txt", "--model", scripted, "--jsonl")
    assert run.code == 2 and run.out == ""
    good = run_glmv("pdf", media["pdf"], "--pages", "1", "--model", scripted, "--jsonl", "--dpi", "72")
    assert good.code == 0
    messages = [json.loads(line).get("message", "") for line in good.out.splitlines()]
    assert any(m.startswith("rendering pages 1 of") for m in messages)
    assert any(m.startswith("loading weights") for m in messages)


def test_running_out_of_memory_is_one_line_and_the_next_file_is_answered(scripted, media, tmp_path):
    """A prompt the device cannot hold: exit 2 and one line saying what to send less of; with
    --each the big image fails and the small one (a prompt under the limit) is still answered."""
    big = random_image(tmp_path / "big.png", 400, 300)
    env = hooked_env(GLMV_TEST_OOM_ABOVE="30")  # (prefill fails as CUDA's allocator does)
    one_line_error(run_glmv("ask", big, "q", "--model", scripted, env=env), 2,
                   "out of memory on cpu reading a ",
                   "-token prompt (it asked for 7.91 GiB more", "): send less: smaller images (--max-pixels)")
    run = run_glmv("ask", big, media["png"], "q", "--each", "--json", "--model", scripted, env=env)
    assert run.code == 2, run.err
    failed, answered = [json.loads(line) for line in run.out.splitlines()]
    assert failed["source"] == str(big) and failed["error"].startswith("out of memory on cpu reading a ")
    assert answered["source"] == str(media["png"])
    assert answered["answer"] == run_glmv("ask", media["png"], "q", "--model", scripted).out.strip()
    assert "Traceback" not in run.err
