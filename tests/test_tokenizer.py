"""Tokenizer over tokenizer.json: equal to transformers' fast tokenizer; streaming decode."""

import pytest

from glmv_cli.errors import ModelError
from glmv_cli.tokenizer import Tokenizer
from tests.reference import GLM_SPECIAL_TOKENS, build_tokenizer

TEXTS = [
    "Describe this image.",
    "[gMASK]<sop><|system|>\nBe brief.<|user|>\n<|begin_of_image|><|image|><|end_of_image|>What is it?"
    "<|assistant|>\n",
    "<think>a square?</think><answer>A <|begin_of_box|>blue square<|end_of_box|></answer>",
    "<|begin_of_video|><|begin_of_image|><|image|><|image|><|end_of_image|>12.0 seconds<|end_of_video|>",
    "日本語のテキスト 😀👍🏽 café naïve Ωμέγα",
    "  two leading spaces,\ttabs\n\nand newlines  ",
    "<|image| almost a token <|image|><|image|>",
    "",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer().save(str(folder / "tokenizer.json"))
    return folder


@pytest.fixture(scope="module")
def tok(folder):
    return Tokenizer.from_folder(folder)


@pytest.fixture(scope="module")
def reference(folder):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)


@pytest.mark.parametrize("text", TEXTS)
def test_encode_decode_equal_transformers(tok, reference, text):
    ids = tok.encode(text)
    assert ids == reference(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == reference.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == reference.decode(ids, skip_special_tokens=True)


def test_special_tokens_are_single_ids(tok, reference):
    for token in GLM_SPECIAL_TOKENS:
        assert tok.encode(token) == [tok.token_id(token)] == [reference.convert_tokens_to_ids(token)]
    ids = tok.encode("a<|image|><|image|>b")
    assert ids.count(tok.token_id("<|image|>")) == 2
    assert tok.token_id("<|no_such_token|>") is None
    assert tok.id_to_token(tok.token_id("<think>")) == "<think>"
    assert tok.vocab_size == len(reference)


@pytest.mark.parametrize("text", TEXTS[2:5] + ["😀", "漢字かな交じり文", "e\u0301 🇺🇳 👩‍👩‍👧"])
def test_stream_decoder_one_id_at_a_time(tok, text):
    ids = tok.encode(text)
    stream = tok.stream()
    deltas = [stream.feed(i) for i in ids] + [stream.flush()]
    assert "".join(deltas) == tok.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas)  # never half a character
    assert stream.ids == ids
    if len(text) > 1:
        assert sum(1 for d in deltas if d) > 1  # it streams, it does not wait for the end


def test_stream_decoder_holds_back_partial_characters(tok):
    ids = tok.encode("ok 😀")
    assert len(tok.encode("😀")) > 1  # byte-level: the emoji is several ids
    stream = tok.stream()
    deltas = [stream.feed(i) for i in ids[:-1]]
    assert "".join(deltas) == "ok "  # the emoji's first bytes wait
    assert stream.feed(ids[-1]) == "😀"
    cut = tok.stream()
    text = "".join(cut.feed(i) for i in ids[:-1]) + cut.flush()
    assert text == tok.decode(ids[:-1])  # an unfinished character at the very end is flushed as is


def test_stream_decoder_skipping_special_tokens(tok):
    ids = tok.encode(TEXTS[2])
    stream = tok.stream(skip_special_tokens=True)
    text = "".join(stream.feed(i) for i in ids) + stream.flush()
    assert text == tok.decode(ids, skip_special_tokens=True) == "a square?A blue square"


def test_missing_or_broken_tokenizer(tmp_path):
    with pytest.raises(ModelError, match="has no tokenizer.json; glmv needs the fast-tokenizer file"):
        Tokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{broken")
    with pytest.raises(ModelError, match=r"tokenizer\.json could not be loaded .*re-download it"):
        Tokenizer.from_folder(tmp_path)
