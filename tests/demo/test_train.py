"""The demo's training script, run for a few steps: it writes a real checkpoint that both our loader
and transformers read, and the held-out monitor reads answers the way the evaluation does."""

from __future__ import annotations

import re
import time

import pytest
import torch

from glmv_cli.demo import data, monitor, spec, train
from glmv_cli.inputs.patches import load_patch_specs
from glmv_cli.loading import load_model
from glmv_cli.model.config import Glm4vConfig
from glmv_cli.model.glm4v import Glm4v
from glmv_cli.reference import reference_model


def test_answer_of_reads_the_answer_span():
    assert monitor.answer_of("<think>The only circle is red.</think><answer> red </answer>") == "red"
    assert monitor.answer_of("<think>no answer written") == ""
    assert monitor.answer_of("<answer>3</answer><answer>4</answer>") == "34"  # what --json reports: not "3"


def test_the_initialisation_lets_inputs_through_the_sandwich_norms(tmp_path):
    config = spec.write_spec(tmp_path)
    model = Glm4v(Glm4vConfig.from_dict(config))
    train.init_weights(model, seed=0)
    model.requires_grad_(False)
    text = model.language_model
    assert abs(float(text.embed_tokens.weight.pow(2).mean().sqrt()) - 1) < 0.05
    assert all(float(layer.post_mlp_layernorm.weight[0]) == pytest.approx(8 ** -0.5) for layer in text.layers)
    assert float(model.visual.merger.post_projection_norm.bias.abs().max()) == 0  # biases 0, even a norm's
    assert float(model.visual.merger.post_projection_norm.weight.min()) == 1

    sample = next(s for s in data.build_samples(tmp_path, "train", 0, 8, workers=1) if s.image_codes is not None)
    batch = data.collate([sample], config["text_config"]["pad_token_id"], load_patch_specs(tmp_path)[0])
    factor = train.match_image_scale(model, batch)
    with torch.no_grad():
        embeds = model.visual(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"])
    assert factor > 5 and float(embeds.pow(2).mean().sqrt()) == pytest.approx(1, rel=1e-3)
    assert train.image_spread(model, batch) > 0.3  # the tokens of one picture differ at init


def test_the_vision_tower_gets_its_own_learning_rate_scale(tmp_path):
    model = Glm4v(Glm4vConfig.from_dict(spec.write_spec(tmp_path)))
    groups = train.param_groups(model, weight_decay=0.1, vision_lr=0.3)
    vision = {id(p) for p in model.visual.parameters()}
    for group in groups:
        assert {id(p) in vision for p in group["params"]} == {group["scale"] == 0.3}
        assert group["weight_decay"] == (0.1 if group["params"][0].ndim >= 2 else 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-train")
    torch.set_num_threads(1)
    train.main([str(out), "--examples", "24", "--easy", "8", "--easy-first", "3", "--easy-steps", "4", "--epochs", "2",
                "--batch-tokens", "1024", "--threads", "1", "--workers", "1",
                "--monitor", "4", "--monitor-every", "1000", "--log-every", "1"])
    return out


def test_training_lowers_the_loss_and_reports_held_out_answers(trained):
    log = (trained / "training.log").read_text()
    losses = [sum(map(float, re.findall(r"=(\d+\.\d+)", line))) / len(re.findall(r"=(\d+\.\d+)", line))
              for line in log.splitlines() if re.match(r"step \d+/\d+ loss", line)]
    assert len(losses) >= 4 and losses[-1] < losses[0]
    assert re.search(r"step \d+ held-out answers right: (\w+=\d+% ?)+$", log, re.M)


def test_the_checkpoint_loads_in_ours_and_in_transformers_with_the_same_logits(trained):
    ours = load_model(trained, "cpu", torch.float32)
    ref = reference_model(trained)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        expected = ref(input_ids=ids).logits
    assert torch.allclose(ours(ids), expected, atol=1e-4, rtol=1e-4)


TINY_RUN = ["--examples", "24", "--easy", "8", "--easy-first", "3", "--easy-steps", "4", "--epochs", "2",
            "--batch-tokens", "1024", "--threads", "1", "--workers", "1", "--monitor", "0", "--log-every", "1",
            "--save-every", "3", "--ink-loss", "0.5", "--shape-ink", "0.5"]  # the ink head's state must come back too


def test_a_run_stopped_after_a_save_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    torch.set_num_threads(1)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train.main([str(whole), *TINY_RUN])
    assert not (whole / train.STATE).exists()  # the finished checkpoint carries no training state

    save_state = train.save_state

    def killed_after_first_save(model, head, opt, step, seconds, args):
        save_state(model, head, opt, step, seconds, args)
        raise KeyboardInterrupt  # the terminal went away

    monkeypatch.setattr(train, "save_state", killed_after_first_save)
    with pytest.raises(KeyboardInterrupt):
        train.main([str(parts), *TINY_RUN])
    monkeypatch.setattr(train, "save_state", save_state)
    assert (parts / train.STATE).is_file()
    with pytest.raises(SystemExit, match="settings differ.*'lr': \\(0.0005, 0.001\\)"):
        train.main([str(parts), *TINY_RUN, "--resume", "--lr", "1e-3"])
    started = time.perf_counter()
    train.main([str(parts), *TINY_RUN, "--resume"])
    wall = time.perf_counter() - started

    a, b = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = (parts / "training.log").read_text()
    assert log.startswith("python -m glmv_cli.demo.train") and "resumed at step 3" in log
    before = int(re.search(r"\((\d+) s in all before", log).group(1))
    total = int(re.search(r"wrote .* \((\d+) s in all\)", log).group(1))
    assert before >= 2 and total >= before + wall - 1  # the time up to the save counts in the total
    assert not (parts / train.STATE).exists()


def test_resume_without_a_saved_state_says_so(tmp_path):
    with pytest.raises(SystemExit, match="training_state.pt does not exist"):
        train.main([str(tmp_path / "new"), *TINY_RUN, "--resume"])
