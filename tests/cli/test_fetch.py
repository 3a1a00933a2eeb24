"""URL attachments against a real HTTP server on localhost (http.server in a thread): files are
fetched and typed, web pages / errors / oversized bodies / slow servers are refused clearly."""

from __future__ import annotations

import pytest

from glmv_cli.app.attachments import resolve
from glmv_cli.app.fetch import fetch
from glmv_cli.errors import InputError
from tests.cli.conftest import glmv_env, local_server, run_glmv
from tests.cli.crafted import ANSWER


@pytest.fixture(scope="module")
def server(media):
    png = media["png"].read_bytes()
    routes = {  # path -> (status, content type, body, send Content-Length)
        "/a.png": (200, "image/png", png, True),
        "/download": (200, "application/octet-stream", png, True),
        "/no-length.png": (200, "image/png", png, False),
        "/page": (200, "text/html; charset=utf-8", b"<html>hi</html>", True),
        "/data.zip": (200, "application/zip", b"PK\x03\x04", True),
        "/doc.pdf": (200, "application/pdf", media["pdf"].read_bytes(), True),
        "/notes.txt": (200, "text/plain; charset=utf-8", b"The meeting is on Tuesday.", True),
    }

    slow = {"/slow.png": 3}
    routes["/slow.png"] = routes["/a.png"]
    with local_server(routes, slow=slow, redirects={"/moved": "/a.png"}) as base, \
            pytest.MonkeyPatch.context() as mp:  # a proxy from the environment must not catch localhost
        mp.setenv("no_proxy", "127.0.0.1,localhost")
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield base


def test_fetch_files(server, media):
    got = fetch(f"{server}/a.png")
    assert got.data == media["png"].read_bytes() and got.content_type == "image/png" and got.name == "a.png"
    assert resolve(f"{server}/download").mime == "image/png"  # octet-stream: sniffed
    assert resolve(f"{server}/moved").mime == "image/png"  # redirects are followed
    assert resolve(f"{server}/doc.pdf").kind == "pdf"
    assert resolve(f"{server}/notes.txt").kind == "text"
    assert fetch(f"{server}/no-length.png").data == media["png"].read_bytes()


@pytest.mark.parametrize("path,kwargs,message", [
    ("/page", {}, "is a web page (text/html)"),
    ("/data.zip", {}, "serves application/zip"),
    ("/missing.png", {}, "HTTP 404"),
    ("/a.png", {"max_bytes": 100}, "over the 100-byte download limit"),
    ("/no-length.png", {"max_bytes": 100}, "over the 100-byte download limit"),
    ("/slow.png", {"timeout": 0.5}, "did not answer within 0.5 s"),
])
def test_fetch_refusals(server, path, kwargs, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fetch(server + path, **kwargs)


def test_unreachable_host():
    with pytest.raises(InputError, match="could not be fetched"):
        fetch("http://127.0.0.1:9/x.png", timeout=2)


def test_url_attachment_end_to_end(server, scripted):
    run = run_glmv("ask", f"{server}/a.png", "where?", "--model", scripted, "--json")
    assert run.code == 0, run.err
    assert run.json["answer"] == ANSWER
    assert run.json["boxes"][0]["pixels"] == [{"image": f"{server}/a.png", "box": [14, 20, 60, 60]}]
    too_big = run_glmv("ask", f"{server}/a.png", "where?", "--model", scripted,
                       env=glmv_env(GLMV_FETCH_MAX_BYTES="100"))
    assert too_big.code == 2 and "download limit" in too_big.err and too_big.err.count("\n") == 1
    page = run_glmv("ask", f"{server}/page", "where?", "--model", scripted)
    assert page.code == 2 and "web page" in page.err
