"""The chat prompt's Tab completion (glmv_cli/line_editing.py) on real files; in a real terminal,
with the kept lines, in test_terminal.py."""

from __future__ import annotations

import os

from glmv_cli.line_editing import candidates, shown


def test_a_slash_completes_to_the_chats_commands():
    assert candidates("/") == ["/attach ", "/reset ", "/save ", "/help ", "/exit "]
    assert candidates("/s") == ["/save "]
    assert candidates("/nope") == [] and candidates("what is /this") == []


def test_attach_and_save_complete_files_and_folders_written_as_typed(tmp_path, monkeypatch):
    (tmp_path / "my photos").mkdir()
    (tmp_path / "my photos" / "cat 1.png").write_bytes(b"x")
    (tmp_path / "memo.pdf").write_bytes(b"x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    (tmp_path / "[draft].png").write_bytes(b"x")  # (glob's brackets, taken as a name)
    monkeypatch.chdir(tmp_path)
    assert candidates("/attach m") == ["/attach memo.pdf", "/attach my photos/"]
    assert candidates("/attach my photos/") == ["/attach my photos/cat 1.png"]
    assert candidates("/attach ") == ["/attach [draft].png", "/attach memo.pdf", "/attach my photos/"]
    assert candidates("/attach .h") == ["/attach .hidden.png"]  # hidden only once a dot is typed
    assert candidates("/attach [d") == ["/attach [draft].png"]
    assert candidates("/save me") == ["/save memo.pdf"]
    assert candidates("/reset m") == [] and candidates("/attach zzz") == []
    monkeypatch.setenv("HOME", str(tmp_path))
    assert candidates("/attach ~/me") == ["/attach ~/memo.pdf"]
    assert candidates(f"/attach {tmp_path}{os.sep}my") == [f"/attach {tmp_path}{os.sep}my photos{os.sep}"]


def test_a_list_of_completions_shows_names_not_whole_lines():
    assert shown("/attach my photos/cat 1.png") == "cat 1.png"
    assert shown("/attach my photos/") == "my photos/"
    assert shown("/attach ") == "/attach"
