"""Past what the kernel lets the process have, in a real memory cgroup (as `docker run -m` makes
one): without the checks Linux's OOM killer ends `glmv ask` with a bare "Killed" (exit 137). With
them, weights that cannot fit are refused in one line before a weight is read, naming the setting
that fits, and that setting then answers in the same cgroup; a KV cache that cannot fit fails the
question in one line, and a shorter answer is then given. Needs a writable cgroup hierarchy with
the memory controller (root in a VM or a privileged container); skipped elsewhere.

The "small" shape: 468.5 MiB of weights in float32, 234.2 MiB in bfloat16, a KV cache of 4 KiB a
position in bfloat16. What Python with torch and glmv takes before the weights (~160 MiB here,
~230 before torch._dynamo stopped being imported) is measured first, from the refusal itself, and
the limits of the tests are set above it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest

from glmv_cli.random_checkpoint import write_random_checkpoint
from tests.cli.conftest import glmv_env

MiB = 2**20
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                reason="cgroups need root on Linux")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("small"), "small")


def memory_hierarchies() -> list[tuple[Path, str]]:
    """(mount point, limit file) of the cgroup v1 memory hierarchy and of a cgroup2 mount whose
    root hands the memory controller to its children."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields, post = line.split(" - ", 1)[0].split(), line.split(" - ", 1)[1].split()
        mount = Path(fields[4])
        if post[0] == "cgroup" and "memory" in post[2].split(","):
            found.append((mount, "memory.limit_in_bytes"))
        elif post[0] == "cgroup2" and "memory" in _read(mount / "cgroup.subtree_control").split():
            found.append((mount, "memory.max"))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@contextmanager
def memory_cgroup(limit: int):
    """A new cgroup under a memory hierarchy's root, limited to `limit` bytes; removed after."""
    for mount, limit_file in memory_hierarchies():
        folder = mount / f"glmv-test-{uuid.uuid4().hex[:8]}"
        try:
            folder.mkdir()
            (folder / limit_file).write_text(str(limit))
        except OSError:
            if folder.exists():
                folder.rmdir()
            continue
        try:
            yield folder
        finally:
            folder.rmdir()
        return
    pytest.skip("no writable cgroup hierarchy with the memory controller here")


def run_in(cgroup: Path, *args: str) -> subprocess.CompletedProcess:
    """`glmv ARGS` as a process that joins `cgroup` before Python starts."""
    script = 'echo $$ > "$0/cgroup.procs" && exec "$@"'
    return subprocess.run(["sh", "-c", script, str(cgroup), sys.executable, "-m", "glmv_cli", *args],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, env=glmv_env(), timeout=300)


def refusal(cgroup: Path, folder: Path, limit_mib: int) -> re.Match:
    """`glmv ask` in float32 in `cgroup`: refused in one line before a weight is read (exit 3, not
    the OOM killer's -9); the match holds the free MiB and the advice."""
    refused = run_in(cgroup, "ask", "--model", str(folder), "Say something", "--dtype", "float32",
                     "--max-new-tokens", "4")
    assert refused.returncode == 3, refused.stderr
    line = refused.stderr.strip()
    match = re.fullmatch(r"glmv: error: the weights need 468\.5 MiB \(float32\) but the cgroup memory limit of this "
                         rf"container or service has ([\d.]+) MiB free of {limit_mib}\.0 MiB: (--[-\w ]+) needs "
                         r"[\d.]+ MiB", line)
    assert match, line
    return match


@pytest.fixture(scope="module")
def baseline(small) -> float:
    """MiB the glmv process holds of its cgroup's limit when it checks the weights."""
    with memory_cgroup(500 * MiB) as cgroup:  # float32 (468.5 MiB) cannot fit beside any Python
        return 500 - float(refusal(cgroup, small, 500).group(1))


def test_weights_past_a_cgroup_limit_are_refused_and_the_advice_answers(small, baseline):
    limit = int(baseline) + 420  # float32 is refused; bfloat16 fits with ~185 MiB to spare
    with memory_cgroup(limit * MiB) as cgroup:
        advice = refusal(cgroup, small, limit).group(2)
        assert advice == "--dtype bfloat16"
        answered = run_in(cgroup, "ask", "--model", str(small), "Say something", "--max-new-tokens", "4",
                          *advice.split())
        assert answered.returncode == 0, answered.stderr
        assert "Traceback" not in answered.stderr


def test_a_kv_cache_past_a_cgroup_limit_fails_the_question_not_the_process(small, baseline):
    """~95 MiB left after the bfloat16 weights: 30,000 new tokens would need a 117 MiB KV cache."""
    limit = int(baseline) + 330
    with memory_cgroup(limit * MiB) as cgroup:
        refused = run_in(cgroup, "ask", "--model", str(small), "Say something", "--max-new-tokens", "30000")
        assert refused.returncode == 2, refused.stderr  # not 137 (-9): the OOM killer's
        error = refused.stderr.strip().splitlines()[-1]
        assert re.fullmatch(r"glmv: error: out of memory on cpu reading a \d+-token prompt \(it asked for 117\.\d MiB "
                            rf"more; [\d.]+ MiB free of {limit}\.0 MiB\): send less: .* or answer "
                            r"\(--max-new-tokens\); .*", error), error
        answered = run_in(cgroup, "ask", "--model", str(small), "Say something", "--max-new-tokens", "4")
        assert answered.returncode == 0, answered.stderr
        assert "Traceback" not in refused.stderr + answered.stderr
