"""`glmv ask / pdf / video` as real processes: what stdout and stderr carry, --json / --jsonl,
greedy ids equal to transformers' generate, stdin, model selection, and --draw-boxes."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from PIL import Image

from glmv_cli.stream import parse
from tests.cli.conftest import glmv_env, hooked_env, run_glmv
from tests.cli.crafted import ANSWER, RAW, THINKING
from tests.reference import reference_model, reference_processor

MAX_NEW = 24


@pytest.fixture(scope="module")
def reference(tiny):
    return reference_model(tiny), reference_processor(tiny)


def reference_ids(reference, content: list[dict], **media) -> tuple[list[int], int]:
    """transformers' greedy continuation (stop token dropped) and the prompt length."""
    model, processor = reference
    messages = [{"role": "user", "content": content}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = dict(processor(text=[prompt], return_tensors="pt", **media))
    inputs.pop("video_metadata", None)
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)[0, n:].tolist()
    stops = set(model.generation_config.eos_token_id)
    return (out[:-1] if out and out[-1] in stops else out), n


# -- stdout / stderr ------------------------------------------------------------------------------

def test_stdout_is_the_answer_and_stderr_the_reasoning(scripted, media):
    run = run_glmv("ask", media["png"], "Where is the blue square?", "--model", scripted)
    assert run.code == 0, run.err
    assert run.out == ANSWER + "\n"
    assert THINKING in run.err and ANSWER not in run.err
    assert "\x1b" not in run.out + run.err  # not a terminal: no escape codes


def test_bytes_the_locale_cannot_decode_are_replaced_not_a_crash(scripted, media):
    """A Latin-1 question or system prompt on a UTF-8 command line, or a Latin-1 line piped into a
    chat, reaches Python as lone surrogates; they become U+FFFD (the answer is given and kept for
    -c), not a crash writing the history."""
    import os

    run = run_glmv("ask", media["png"], os.fsdecode(b"caf\xe9: where is the blue square?"), "-s",
                   os.fsdecode(b"r\xe9ponds"), "--model", scripted)
    assert (run.code, run.out) == (0, ANSWER + "\n"), run.err
    chat = run_glmv("chat", "--model", scripted, "-R", input=b"caf\xe9?\n")
    assert (chat.code, chat.out) == (0, ANSWER + "\n"), chat.err


def test_a_stdin_left_open_gets_a_line_saying_why_glmv_waits(scripted, media):
    """As Node's spawn or Popen(stdin=PIPE) leave it: after 2 s of nothing, a note; once it ends,
    the answer. With --no-stdin, nothing is waited for."""
    import subprocess
    import sys
    import time

    args = [sys.executable, "-m", "glmv_cli", "ask", str(media["png"]), "Where?", "--model", str(scripted), "-R"]
    waiting = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=glmv_env())
    try:
        time.sleep(6)
        assert waiting.poll() is None  # (still waiting for stdin's end)
        out, err = waiting.communicate(timeout=60)  # (closes stdin)
    finally:
        waiting.kill()
    assert b"waiting for the text piped into stdin" in err and b"--no-stdin" in err
    assert out.decode() == ANSWER + "\n"
    unread = subprocess.Popen([*args, "--no-stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=glmv_env())
    try:
        out, err = unread.stdout.read(), unread.stderr.read()  # (stdin left open: glmv answers and exits)
        assert unread.wait(60) == 0
    finally:
        unread.kill()
    assert out.decode() == ANSWER + "\n" and b"waiting for" not in err


def test_a_pipe_given_as_a_path_is_read_once(scripted, media):
    """bash's <(cmd) is a pipe: peeking at its type used to consume it ("is empty")."""
    import shlex
    import subprocess
    import sys

    glmv = f"{shlex.quote(sys.executable)} -m glmv_cli"
    model = shlex.quote(str(scripted))
    script = (f"{glmv} ask <(cat {shlex.quote(str(media['png']))}) Where? --model {model} -R --json; "
              f"{glmv} pdf <(cat {shlex.quote(str(media['pdf']))}) Where? --model {model} -R --json --dpi 72; "
              f"{glmv} pdf <(cat {shlex.quote(str(media['png']))}) --model {model}; echo rc=$?")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=glmv_env(), timeout=240)
    image, pdf = (json.loads(line) for line in done.stdout.splitlines()[:2])
    assert image["answer"] == pdf["answer"] == ANSWER, done.stderr
    assert image["usage"]["image_tokens"] > 0 and pdf["usage"]["image_tokens"] > 0
    assert done.stdout.splitlines()[2] == "rc=2" and "is image/png, not a PDF" in done.stderr


def test_each_takes_piped_text_as_context_for_every_file(scripted, media):
    run = run_glmv("ask", media["png"], media["jpg"], "Where?", "--model", scripted, "--each", "--json",
                   input="Some context.\n")
    answers = [json.loads(line) for line in run.out.splitlines()]
    assert run.code == 0 and [a["source"] for a in answers] == [str(media["png"]), str(media["jpg"])]
    alone = json.loads(run_glmv("ask", media["png"], "Where?", "--model", scripted, "--json").out)
    assert answers[0]["usage"]["prompt_tokens"] > alone["usage"]["prompt_tokens"]  # (the context is in it)


def test_options_for_a_kind_not_attached_get_a_note(scripted, media):
    run = run_glmv("ask", media["png"], "Where?", "--model", scripted, "-R", "--pages", "2", "--dpi", "90",
                   "--start", "3")
    assert run.code == 0 and run.out == ANSWER + "\n"
    assert "note: --pages and --dpi apply to a PDF or slides, and none is attached; they are not used" in run.err
    assert "note: --start applies to a video, and none is attached; it is not used" in run.err
    run = run_glmv("ask", media["pdf"], media["mp4"], "Where?", "--model", scripted, "-R", "--pages", "1",
                   "--start", "0", "--dpi", "72")
    assert run.code == 0 and "not used" not in run.err


def test_hide_reasoning(scripted, media):
    run = run_glmv("ask", media["png"], "where?", "--model", scripted, "-R")
    assert (run.code, run.out, run.err) == (0, ANSWER + "\n", "")


def test_random_model_stdout_is_what_the_parser_calls_the_answer(tiny, media):
    """Whatever a random model writes, stdout holds exactly the answer part of its raw output."""
    args = ("ask", media["png"], "Describe this.", "--model", tiny, "--max-new-tokens", MAX_NEW)
    plain, as_json = run_glmv(*args), run_glmv(*args, "--json")
    assert plain.code == as_json.code == 0, plain.err + as_json.err
    raw = as_json.json["raw"]
    thinking, answer = parse(raw)
    assert plain.out == (answer + "\n" if answer else "")
    assert as_json.json["answer"] == answer and as_json.json["thinking"] == thinking


def test_json_fields(scripted, media):
    run = run_glmv("ask", media["png"], "Where is the blue square?", "--model", scripted, "--json")
    assert run.code == 0, run.err
    d = json.loads(run.out)
    assert run.out.count("\n") == 1
    assert (d["model"], d["thinking"], d["answer"], d["raw"]) == (str(scripted), THINKING, ANSWER, RAW)
    assert d["boxes"] == [{"box": [120.0, 250.0, 500.0, 750.0],
                           "pixels": [{"image": str(media["png"]), "box": [14, 20, 60, 60]}]}]  # 120x80 image
    u = d["usage"]
    assert u == {"prompt_tokens": u["prompt_tokens"], "image_tokens": 12, "completion_tokens": 10, "cached_tokens": 0,
                 "drafted_tokens": u["drafted_tokens"], "accepted_drafts": u["accepted_drafts"], "reasoning_tokens": 4}
    assert 0 <= u["accepted_drafts"] <= u["drafted_tokens"]
    assert set(d["timings"]) == {"load_s", "preprocess_s", "prefill_s", "decode_tokens_per_s"}
    assert all(v >= 0 for v in d["timings"].values()) and d["timings"]["load_s"] > 0
    assert d["finish_reason"] == "stop" and run.err == ""


def test_jsonl_events(scripted, media):
    run = run_glmv("ask", media["png"], "where?", "--model", scripted, "--jsonl")
    assert run.code == 0, run.err
    events = [json.loads(line) for line in run.out.splitlines()]
    types = [e["type"] for e in events]
    assert types[-1] == "done" and types.count("done") == 1
    assert types.index("thinking") < types.index("answer")
    assert "".join(e["text"] for e in events if e["type"] == "thinking") == THINKING
    assert "".join(e["text"] for e in events if e["type"] == "answer") == ANSWER
    assert [e["text"] for e in events if e.get("boxed")] == ["[[120,250,500,750]]"]
    assert events[-1]["answer"] == ANSWER


def test_extract_without_a_code_block_prints_the_answer(scripted):
    run = run_glmv("ask", "q", "--model", scripted, "-x", "-R")
    assert (run.code, run.out) == (0, ANSWER + "\n")


def test_think_budget_from_the_command_line(scripted):
    run = run_glmv("ask", "q", "--model", scripted, "--think-budget", "1", "--json")
    assert run.code == 0, run.err
    assert run.json["thinking"] == "Let me look." and run.json["answer"] == ANSWER
    assert run.json["raw"].startswith("<think>Let me look.</think><answer>")


def test_cut_thinking_still_prints_what_there_is_with_a_note(scripted):
    run = run_glmv("ask", "q", "--model", scripted, "--max-new-tokens", "3")
    assert run.code == 0
    assert run.out == ""
    assert "Let me look. I see a blue square." in run.err
    assert "glmv: note: the model reached 3 new tokens while still thinking" in run.err


def test_ask_sends_pdfs_and_videos_to_their_loaders(scripted, media):
    run = run_glmv("ask", media["pdf"], media["mp4"], "what is in these?", "--model", scripted, "--json", "--dpi", "72",
                   "--pages", "1-2", "--fps", "1")
    assert run.code == 0, run.err
    assert [p["image"] for p in run.json["boxes"][0]["pixels"]] == [f"{media['pdf']} page 1", f"{media['pdf']} page 2"]
    # pages: 200x150 pt at 72 DPI -> 196x140 px -> 7x5 merged patches each; the video: 2 frames
    # (2 s at 1 fps) of 64x48, upscaled to the pixel minimum -> 112x84 -> 4x3
    assert run.json["usage"]["image_tokens"] == 2 * 35 + 12


def test_verbose_progress_lines_off_a_terminal(scripted, media):
    run = run_glmv("ask", media["png"], "where?", "--model", scripted, "-R", "-v")
    assert run.code == 0
    assert [line.split(" ")[1] for line in run.err.splitlines()] == ["opening", "reading", "loading", "reading"]


def test_draw_boxes(scripted, media, tmp_path):
    out = tmp_path / "boxes.png"
    run = run_glmv("ask", media["png"], "where?", "--model", scripted, "-R", "--draw-boxes", out)
    assert run.code == 0, run.err
    drawn, original = Image.open(out).convert("RGB"), Image.open(media["png"]).convert("RGB")
    assert drawn.size == original.size == (120, 80)
    x1, y1, x2, y2 = 14, 20, 60, 60
    assert drawn.getpixel((x1, (y1 + y2) // 2)) == (255, 0, 0) == drawn.getpixel(((x1 + x2) // 2, y2))
    assert drawn.getpixel((100, 5)) == original.getpixel((100, 5))  # outside the box: untouched


# -- parity with transformers ---------------------------------------------------------------------

def test_one_image_equals_reference_greedy(tiny, media, reference):
    want, n = reference_ids(reference, [{"type": "image"}, {"type": "text", "text": "Describe this."}],
                            images=[Image.open(media["png"])])
    run = run_glmv("ask", media["png"], "Describe this.", "--model", tiny, "--temperature", "0",
                   "--max-new-tokens", MAX_NEW, "--json")
    assert run.code == 0, run.err
    assert run.json["completion_ids"] == want and len(want) >= 8
    assert run.json["usage"]["prompt_tokens"] == n


def test_scripted_answer_survives_int8_and_compile(scripted, media):
    """--quantize int8 and --compile run end to end; the crafted model's peaked logits keep the
    same greedy answer through int8 weights and the compiled step."""
    run = run_glmv("ask", media["png"], "Where is the blue square?", "--model", scripted, "--quantize", "int8",
                   "--compile", "--json", timeout=300)
    assert run.code == 0, run.err
    assert run.json["answer"] == ANSWER and run.json["thinking"] == THINKING


def test_several_images_equal_reference_greedy(tiny, media, reference):
    paths = [media["png"], media["png2"], media["jpg"]]
    want, n = reference_ids(reference, [{"type": "image"}] * 3 + [{"type": "text", "text": "Compare these."}],
                            images=[Image.open(p).convert("RGB") for p in paths])
    run = run_glmv("ask", *paths, "Compare these.", "--model", tiny, "-t", "0", "--max-new-tokens", MAX_NEW, "--json")
    assert run.code == 0, run.err
    assert run.json["completion_ids"] == want and len(want) >= 8
    assert run.json["usage"]["prompt_tokens"] == n


def test_pdf_page_equals_reference_greedy(tiny, media, reference):
    from glmv_cli.inputs.pdf import render_pages

    page = render_pages(media["pdf"], "2", dpi=100)[0]
    want, n = reference_ids(reference, [{"type": "image"}, {"type": "text", "text": "What is on it?"}], images=[page])
    run = run_glmv("pdf", media["pdf"], "What is on it?", "--pages", "2", "--dpi", "100", "--model", tiny,
                   "-t", "0", "--max-new-tokens", MAX_NEW, "--json")
    assert run.code == 0, run.err
    assert run.json["completion_ids"] == want and len(want) >= 8
    assert run.json["usage"]["prompt_tokens"] == n


def test_video_equals_reference_greedy(tiny, media, reference):
    from transformers.video_utils import VideoMetadata

    from glmv_cli.inputs.video_decode import decode_frames, probe_video

    probe = probe_video(media["mp4"])
    frames = decode_frames(media["mp4"], range(probe.frame_count), backend="pyav", probe=probe)
    meta = VideoMetadata(total_num_frames=probe.frame_count, fps=probe.fps, duration=probe.duration)
    want, n = reference_ids(reference, [{"type": "video"}, {"type": "text", "text": "What happens?"}],
                            videos=[frames], video_metadata=[meta], do_sample_frames=True)
    run = run_glmv("video", media["mp4"], "What happens?", "--model", tiny, "-t", "0",
                   "--max-new-tokens", MAX_NEW, "--json")
    assert run.code == 0, run.err
    assert run.json["completion_ids"] == want and len(want) >= 8
    assert run.json["usage"]["prompt_tokens"] == n


def test_animated_gif_as_a_video_equals_reference_greedy(tiny, reference, tmp_path):
    """`glmv video anim.gif` (a screen recording, a meme): its frames at their own delays, as the
    reference sees the same frames as a 2 fps video; `glmv ask anim.gif` shows the first frame."""
    import numpy as np
    from PIL import Image
    from transformers.video_utils import VideoMetadata

    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    frames = np.stack([np.full((48, 64, 3), c, np.uint8) for c in colours])
    gif = tmp_path / "anim.gif"
    Image.fromarray(frames[0]).save(gif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]],
                                    duration=500, loop=0)
    meta = VideoMetadata(total_num_frames=6, fps=2.0, duration=3.0)
    want, n = reference_ids(reference, [{"type": "video"}, {"type": "text", "text": "What happens?"}],
                            videos=[frames], video_metadata=[meta], do_sample_frames=True)
    run = run_glmv("video", gif, "What happens?", "--model", tiny, "-t", "0", "--max-new-tokens", MAX_NEW, "--json")
    assert run.code == 0, run.err
    assert run.json["completion_ids"] == want and run.json["usage"]["prompt_tokens"] == n
    still = run_glmv("ask", gif, "What happens?", "--model", tiny, "-t", "0", "--max-new-tokens", "1", "--json")
    assert still.code == 0 and still.json["usage"]["prompt_tokens"] != n


def test_each_asks_about_every_file_on_its_own_and_goes_on_past_a_bad_one(tiny, media, tmp_path):
    """--each: one model load, a fresh conversation per file (the answers are those of separate
    runs, token for token), one JSON line per file with its source, and a corrupt file in the
    middle costs only its own answer."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(media["png"].read_bytes()[:60])  # the header, then nothing
    files = [media["png"], broken, media["jpg"]]
    flags = ("--model", tiny, "-t", "0", "--max-new-tokens", "8")
    run = run_glmv("ask", *files, "What is this?", *flags, "--each", "--json")
    assert run.code == 2 and "1 of 3 inputs failed" in run.err
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert [d["source"] for d in lines] == [str(f) for f in files]
    assert "truncated or corrupt" in lines[1]["error"] and "answer" not in lines[1]
    for f, got in zip(files[::2], lines[::2], strict=True):
        alone = run_glmv("ask", f, "What is this?", *flags, "--json")
        assert alone.code == 0 and got["completion_ids"] == alone.json["completion_ids"]
        usage, cached = alone.json["usage"], got["usage"].pop("cached_tokens")
        usage.pop("cached_tokens")  # (a process reads what the one before it kept: app/kept_cache.py)
        for key in ("drafted_tokens", "accepted_drafts"):  # (--each drafts from the answers before)
            usage.pop(key), got["usage"].pop(key)
        assert got["usage"] == usage and cached < 10  # the template before the image, from the file before
    text = run_glmv("ask", media["png"], media["jpg"], "What is this?", *flags, "--each", "-R")
    assert text.code == 0
    assert text.out.startswith(f"==> {media['png']} <==\n") and f"\n\n==> {media['jpg']} <==\n" in text.out
    assert run_glmv("ask", "What is this?", *flags, "--each").code == 2


def test_each_parallel_answers_together_in_order_with_the_same_answers(tiny, media, tmp_path):
    """--each --parallel 3: five files (a bad one among them) on three threads, decoded together;
    the output is --each's without it, line for line (the same answers, in order), and the text
    form streams each answer under its own header."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(media["png"].read_bytes()[:60])
    files = [media["png"], media["jpg"], broken, media["png2"], media["pdf"]]
    flags = ("--model", tiny, "--dtype", "float32", "-t", "0", "--max-new-tokens", "12", "--each")
    env = hooked_env(GLMV_NO_HISTORY="1", GLMV_TEST_STEP_DELAY_MS="25")  # (decoding outlasts loading a file)

    def answers(run):
        out = [json.loads(line) for line in run.out.splitlines()]
        return [(d["source"], d.get("completion_ids"), d.get("error")) for d in out]

    serial = run_glmv("ask", *files, "What is this?", *flags, "--json", env=env)
    parallel = run_glmv("ask", *files, "What is this?", *flags, "--json", "--parallel", "3", "-v", env=env)
    assert serial.code == parallel.code == 2 and "1 of 5 inputs failed" in parallel.err
    together = re.search(r"--parallel 3: \d+ decode steps, ([\d.]+) answers in each", parallel.err)
    assert together and float(together[1]) > 1.5  # (they were decoded together)
    assert answers(parallel) == answers(serial)
    assert len({str(a[1]) for a in answers(serial)}) == 5  # (different files, different answers)
    text = run_glmv("ask", *files, "What is this?", *flags, "-R", "--parallel", "3", env=env)
    plain = run_glmv("ask", *files, "What is this?", *flags, "-R", env=env)
    assert text.out == plain.out and text.out.count("==> ") == 5
    lonely = run_glmv("ask", media["png"], "What is this?", "--model", tiny, "--parallel", "2")
    assert lonely.code == 2 and "goes with --each" in lonely.err


def test_text_only_prompt_tokens_equal_reference(tiny, reference):
    _, n = reference_ids(reference, [{"type": "text", "text": "Write a haiku about the sea."}])
    run = run_glmv("ask", "Write a haiku about the sea.", "--model", tiny, "--max-new-tokens", "4", "--json")
    assert run.code == 0 and run.json["usage"]["prompt_tokens"] == n


# -- stdin ----------------------------------------------------------------------------------------

def test_image_bytes_on_stdin(scripted, media):
    run = run_glmv("ask", "-", "what is this?", "--model", scripted, "--json", input=media["png"].read_bytes())
    assert run.code == 0, run.err
    assert run.json["usage"]["image_tokens"] == 12
    assert run.json["boxes"][0]["pixels"] == [{"image": "stdin", "box": [14, 20, 60, 60]}]


def test_piped_image_without_dash_is_attached_too(scripted, media):
    run = run_glmv("ask", "what is this?", "--model", scripted, "--json", input=media["png"].read_bytes())
    assert run.code == 0 and run.json["usage"]["image_tokens"] == 12


def test_piped_text_is_context_before_the_question(tiny, reference):
    diff = "--- a/x.py\n+++ b/x.py\n-print(1)\n+print(2)\n"
    _, n = reference_ids(reference, [{"type": "text", "text": diff.strip("\n") + "\n\n"},
                                     {"type": "text", "text": "review this"}])
    run = run_glmv("ask", "review this", "--model", tiny, "--max-new-tokens", "4", "--json", input=diff)
    assert run.code == 0, run.err
    assert run.json["usage"]["prompt_tokens"] == n


def test_piped_text_alone_is_the_question(tiny, reference):
    _, n = reference_ids(reference, [{"type": "text", "text": "What is 2+2?"}])
    run = run_glmv("ask", "--model", tiny, "--max-new-tokens", "4", "--json", input="What is 2+2?\n")
    assert run.code == 0 and run.json["usage"]["prompt_tokens"] == n


def test_text_file_attachment(scripted, media):
    run = run_glmv("ask", media["txt"], "When is the meeting?", "--model", scripted, "--json")
    plain = run_glmv("ask", "When is the meeting?", "--model", scripted, "--json")
    assert run.code == plain.code == 0
    assert run.json["usage"]["prompt_tokens"] > plain.json["usage"]["prompt_tokens"] + 8
    assert run.json["usage"]["image_tokens"] == 0


def test_svg_is_attached_as_an_image_from_a_file_and_from_stdin(scripted, tmp_path):
    from glmv_cli.inputs.image import open_image
    from tests.inputs.test_svg import DIAGRAM

    (tmp_path / "diagram.svg").write_bytes(DIAGRAM)
    open_image(DIAGRAM).save(tmp_path / "diagram.png")
    as_png = run_glmv("ask", tmp_path / "diagram.png", "what?", "--model", scripted, "--json")
    as_svg = run_glmv("ask", tmp_path / "diagram.svg", "what?", "--model", scripted, "--json")
    piped = run_glmv("ask", "-", "what?", "--model", scripted, "--json", input=DIAGRAM)
    assert as_png.code == as_svg.code == piped.code == 0, as_svg.err
    usages = [{k: v for k, v in r.json["usage"].items() if k != "cached_tokens"} for r in (as_png, as_svg, piped)]
    assert usages[0] == usages[1] == usages[2] and usages[0]["image_tokens"] > 0


# -- model selection ------------------------------------------------------------------------------

def test_model_from_environment_and_from_the_hub_cache(scripted, tmp_path):
    by_env = run_glmv("ask", "q", "-R", env=glmv_env(GLMV_MODEL=str(scripted)))
    assert (by_env.code, by_env.out) == (0, ANSWER + "\n")
    repo = tmp_path / "hub" / "models--someone--tiny-glm"
    shutil.copytree(scripted, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    by_id = run_glmv("ask", "q", "-R", "--model", "someone/tiny-glm", env=glmv_env(HF_HUB_CACHE=str(tmp_path / "hub")))
    assert (by_id.code, by_id.out) == (0, ANSWER + "\n")


def test_default_model_missing_says_how_to_download(tmp_path):
    run = run_glmv("ask", "q", env=glmv_env(HF_HUB_CACHE=str(tmp_path)))
    assert run.code == 3
    assert run.err.count("\n") == 1 and "Traceback" not in run.err
    assert "hf download zai-org/GLM-4.1V-9B-Thinking" in run.err
