"""`glmv ask -c` in a new process starts from the KV cache kept beside the conversation
(app/kept_cache.py): it runs only what the follow-up adds and answers as a run without it does; a
cache from another setting, another version of the weights or a broken file is passed over."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.cli.conftest import glmv_env, run_glmv

SAMPLED = ("--temperature", "1.5", "--seed", "3")  # random weights: greedy repeats one token
SETTING = ("--dtype", "float32", "--device", "cpu", "--max-new-tokens", "8", *SAMPLED)
ARGS = (*SETTING, "--json")


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


def env_for(state, **extra):
    return glmv_env(XDG_STATE_HOME=str(state), **extra)


def kept(state):
    return state / "glmv" / "last.kv.safetensors"


def test_a_follow_up_in_a_new_process_runs_only_what_it_adds(tiny, media, state, tmp_path):
    first = run_glmv("ask", media["png"], "What is in the picture?", "--model", tiny, *ARGS, env=env_for(state))
    assert first.code == 0 and kept(state).is_file(), first.err
    shutil.copytree(state, tmp_path / "plain")
    follow = run_glmv("ask", "-c", "And the colours?", *ARGS, env=env_for(state))
    plain = run_glmv("ask", "-c", "And the colours?", *ARGS, env=env_for(tmp_path / "plain", GLMV_PROMPT_CACHE="0"))
    assert follow.code == plain.code == 0, follow.err + plain.err
    assert follow.json["usage"]["cached_tokens"] == first.json["usage"]["prompt_tokens"]
    assert plain.json["usage"]["cached_tokens"] == 0
    assert follow.json["usage"]["prompt_tokens"] == plain.json["usage"]["prompt_tokens"]
    assert follow.json["completion_ids"] == plain.json["completion_ids"]
    again = run_glmv("ask", "-c", "And the shapes?", *ARGS, env=env_for(state))  # the follow-up's own, kept
    assert again.json["usage"]["cached_tokens"] == follow.json["usage"]["prompt_tokens"]


def test_a_chat_keeps_its_cache_when_it_ends_and_starts_from_it(tiny, media, state):
    chat = run_glmv("chat", media["png"], "--model", tiny, *SETTING, "--jsonl",
                    input="What is in the picture?\n", env=env_for(state))
    assert chat.code == 0, chat.err
    follow = run_glmv("ask", "-c", "And the colours?", *ARGS, env=env_for(state))
    assert follow.code == 0 and follow.json["usage"]["cached_tokens"] > 12  # past the image
    again = run_glmv("chat", "-c", *SETTING, "--jsonl", input="And the shapes?\n", env=env_for(state))
    done = [json.loads(line) for line in again.out.splitlines() if json.loads(line)["type"] == "done"]
    assert again.code == 0 and done[0]["usage"]["cached_tokens"] == follow.json["usage"]["prompt_tokens"]


def test_a_new_question_about_the_same_image_reads_only_the_question(tiny, media, state, tmp_path):
    """A script asking several questions about one screenshot, each its own `glmv ask`."""
    first = run_glmv("ask", media["png"], "What is in the picture?", "--model", tiny, *ARGS, env=env_for(state))
    assert first.code == 0
    shutil.copytree(state, tmp_path / "plain")
    second = run_glmv("ask", media["png"], "Which colours are there?", "--model", tiny, *ARGS, env=env_for(state))
    plain = run_glmv("ask", media["png"], "Which colours are there?", "--model", tiny, *ARGS,
                     env=env_for(tmp_path / "plain", GLMV_PROMPT_CACHE="0"))
    assert second.code == plain.code == 0
    image_end = 4 + first.json["usage"]["image_tokens"]  # [gMASK]<sop><|user|>\n<|begin_of_image|>, the image
    assert image_end <= second.json["usage"]["cached_tokens"] < first.json["usage"]["prompt_tokens"]
    assert second.json["completion_ids"] == plain.json["completion_ids"]


@pytest.mark.parametrize("change", ["dtype", "weights", "broken"])
def test_a_cache_computed_otherwise_or_broken_is_passed_over(tiny, media, state, tmp_path, change):
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    first = run_glmv("ask", media["png"], "What is in the picture?", "--model", model, *ARGS, env=env_for(state))
    assert first.code == 0
    args = list(ARGS)
    if change == "dtype":
        args[args.index("float32")] = "bfloat16"
    elif change == "weights":  # (a download that replaced the files)
        weights = next(model.glob("*.safetensors"))
        os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    else:
        kept(state).write_bytes(kept(state).read_bytes()[:1000])  # cut short
    follow = run_glmv("ask", "-c", "And the colours?", *args, env=env_for(state))
    assert follow.code == 0, follow.err
    assert follow.json["usage"]["cached_tokens"] == 0 and "Traceback" not in follow.err


def test_what_is_kept_and_what_is_not(tiny, media, state):
    args = (media["png"], "What is in the picture?", "--model", tiny, *ARGS)
    assert run_glmv("ask", *args, env=env_for(state)).code == 0 and kept(state).is_file()
    assert run_glmv("ask", *args, env=env_for(state, GLMV_PROMPT_CACHE_DISK_MB="0")).code == 0
    assert not kept(state).exists()  # over the limit: not kept, and the older one is gone
    assert run_glmv("ask", *args, env=env_for(state, GLMV_NO_HISTORY="1")).code == 0
    assert not kept(state).exists()
    assert run_glmv("ask", "Hi", "--model", tiny, *ARGS, env=env_for(state)).code == 0
    assert not kept(state).exists()  # a prompt too short to be worth it
    (state / "file").write_text("")
    blocked = run_glmv("ask", *args, env=env_for(state, GLMV_STATE_DIR=str(state / "file")))
    assert blocked.code == 0 and blocked.err.count("could not keep") == 1  # one warning about the folder
