"""Tiny checkpoints with a GLM-4.6V-style chat template (tools, <tool_call> replies, tool results),
for the tool-calling tests of the session and the server.

`write_tool_scripted`: greedy decoding walks TOOL_SCRIPT (tests/cli/crafted.py): it thinks, then
calls get_weather(city="Paris", days=3) and stops on <|observation|>, as GLM-4.6V ends a turn
that calls a tool. `write_tool_random`: random weights whose tokenizer has the tool-call markers as
added tokens (as GLM-4.5V's has), for answers held to tool calls at temperature 1.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken

from glmv_cli.app.tools import MARKERS
from tests.cli.crafted import write_crafted
from tests.reference import _config_dict, build_tokenizer, random_state_dict, save_weights, write_side_files

TOOL_TEMPLATE = Path(__file__).with_name("glm46v_style_template.jinja")
TOOL_THINKING = "The user wants the weather in Paris."
TOOL_SCRIPT = ["<think>", TOOL_THINKING, "</think>", "\n<tool_call>get_weather\n",
               "<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n",
               "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n", "</tool_call>", "<|observation|>"]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}


def write_tool_scripted(folder: Path) -> Path:
    folder = write_crafted(folder, TOOL_SCRIPT)
    (folder / "chat_template.jinja").write_text(TOOL_TEMPLATE.read_text())
    return folder


def write_tool_random(folder: Path, seed: int = 0) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.add_special_tokens([AddedToken(m, special=True, normalized=False) for m in MARKERS])
    config = _config_dict(tok, {}, {}, "hub")
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_weights(folder, random_state_dict(config, seed))
    write_side_files(folder, tok, config)
    (folder / "chat_template.jinja").write_text(TOOL_TEMPLATE.read_text())
    return folder
