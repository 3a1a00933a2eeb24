"""The host's room for a model on the CPU (host_memory.py), read from the same files Linux has, laid
out in a temporary folder: /proc/meminfo, /proc/self/cgroup and mountinfo, the cgroup folders of
v2 and v1, and `ulimit -v`. The least of them binds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from glmv_cli.host_memory import CGROUP, MACHINE, ULIMIT, Room, host_room

resource = pytest.importorskip("resource")  # Unix
GiB, MiB = 2**30, 2**20
NO_LIMIT = resource.RLIM_INFINITY
V1_UNLIMITED = 9223372036854771712  # what cgroup v1 writes for "no limit"


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def machine(root: Path, available: int = 14 * GiB, total: int = 16 * GiB, swap: int = 0) -> Path:
    write(root, "proc/meminfo", f"MemTotal:       {total // 1024} kB\nMemFree:         1234 kB\n"
                                f"MemAvailable:   {available // 1024} kB\nSwapTotal:      {swap // 1024} kB\n"
                                f"SwapFree:       {swap // 1024} kB\n")
    write(root, "proc/self/status", "Name:\tpython\nVmPeak:\t 1200000 kB\nVmSize:\t 1048576 kB\n")
    return root


def v2(root: Path, path: str, mount_root: str = "/") -> None:
    write(root, "proc/self/cgroup", f"0::{path}\n")
    write(root, "proc/self/mountinfo",
          "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
          f"30 22 0:26 {mount_root} /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 "
          "rw,nsdelegate,memory_recursiveprot\n")


def v2_limits(root: Path, folder: str, limit: str, current: int, file_cache: int = 0) -> None:
    base = f"sys/fs/cgroup/{folder}".rstrip("/")
    write(root, f"{base}/memory.max", f"{limit}\n")
    write(root, f"{base}/memory.current", f"{current}\n")
    write(root, f"{base}/memory.stat", f"anon {current - file_cache}\nfile {file_cache}\n"
                                       f"active_file {file_cache // 2}\ninactive_file {file_cache - file_cache // 2}\n")


def v1(root: Path, path: str, mount_root: str = "/") -> None:
    write(root, "proc/self/cgroup", f"12:pids:/\n4:memory:{path}\n3:cpu,cpuacct:{path}\n0::/\n")
    write(root, "proc/self/mountinfo",
          "25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n"
          f"31 25 0:27 {mount_root} /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup "
          "rw,memory\n"
          "32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n"
          "33 25 0:29 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n")


def v1_limits(root: Path, folder: str, limit: int, usage: int, file_cache: int = 0) -> None:
    base = f"sys/fs/cgroup/memory/{folder}".rstrip("/")
    write(root, f"{base}/memory.limit_in_bytes", f"{limit}\n")
    write(root, f"{base}/memory.usage_in_bytes", f"{usage}\n")
    write(root, f"{base}/memory.stat", f"cache {file_cache}\nrss {usage - file_cache}\n"
                                       f"total_active_file {file_cache}\ntotal_inactive_file 0\n")


def test_the_machines_available_memory_and_swap(tmp_path):
    room = host_room(machine(tmp_path, swap=4 * GiB), address_limit=NO_LIMIT)
    assert room == Room(14 * GiB, 16 * GiB, 4 * GiB, MACHINE)


def test_not_linux_is_not_known(tmp_path):
    assert host_room(tmp_path, address_limit=NO_LIMIT) is None


def test_a_v2_container_limit_counts_its_file_cache_as_free(tmp_path):
    """`docker run -m 8g` on a 16 GB machine: 3 GiB used, 1.5 GiB of it page cache."""
    machine(tmp_path, swap=4 * GiB)
    v2(tmp_path, "/", mount_root="/docker/0123abcd")
    v2_limits(tmp_path, "", str(8 * GiB), 3 * GiB, file_cache=3 * GiB // 2)
    room = host_room(tmp_path, address_limit=NO_LIMIT)
    assert room == Room(8 * GiB - 3 * GiB + 3 * GiB // 2, 8 * GiB, 0, CGROUP)


def test_a_v2_limit_above_the_process_binds(tmp_path):
    """A systemd scope with no limit of its own inside a user slice with MemoryMax=6G."""
    machine(tmp_path)
    v2(tmp_path, "/user.slice/user-1000.slice/run-1.scope")
    v2_limits(tmp_path, "user.slice/user-1000.slice/run-1.scope", "max", GiB)
    v2_limits(tmp_path, "user.slice/user-1000.slice", "max", 2 * GiB)
    v2_limits(tmp_path, "user.slice", str(6 * GiB), 5 * GiB)
    assert host_room(tmp_path, address_limit=NO_LIMIT) == Room(GiB, 6 * GiB, 0, CGROUP)


def test_v2_without_limits_leaves_the_machine(tmp_path):
    machine(tmp_path, available=10 * GiB)
    v2(tmp_path, "/user.slice")
    v2_limits(tmp_path, "user.slice", "max", 3 * GiB)
    assert host_room(tmp_path, address_limit=NO_LIMIT).where == MACHINE


@pytest.mark.parametrize("path", ["/docker/0123abcd", "/system.slice/containerd.service"])
def test_a_v1_limit_in_a_container_is_read_at_its_mount(tmp_path, path):
    """cgroup v1 inside a container: /proc/self/cgroup names the host's path, which is the mount's
    root (or lies outside it); the container's own cgroup is the mount point."""
    machine(tmp_path)
    v1(tmp_path, path, mount_root="/docker/0123abcd")
    v1_limits(tmp_path, "", 2 * GiB, GiB + 512 * MiB, file_cache=256 * MiB)
    assert host_room(tmp_path, address_limit=NO_LIMIT) == Room(768 * MiB, 2 * GiB, 0, CGROUP)


def test_a_v1_cgroup_below_a_containers_mount(tmp_path):
    machine(tmp_path)
    v1(tmp_path, "/docker/0123abcd/worker", mount_root="/docker/0123abcd")
    v1_limits(tmp_path, "", 2 * GiB, GiB)
    v1_limits(tmp_path, "worker", 512 * MiB, 128 * MiB)
    assert host_room(tmp_path, address_limit=NO_LIMIT) == Room(384 * MiB, 512 * MiB, 0, CGROUP)


def test_a_v1_limit_on_the_host(tmp_path):
    """A batch job's cgroup under the v1 hierarchy mounted whole; v1's "no limit" above it."""
    machine(tmp_path)
    v1(tmp_path, "/slurm/uid_1000/job_42")
    v1_limits(tmp_path, "slurm/uid_1000/job_42", 4 * GiB, GiB)
    v1_limits(tmp_path, "slurm", V1_UNLIMITED, 5 * GiB)
    v1_limits(tmp_path, "", V1_UNLIMITED, 9 * GiB)
    assert host_room(tmp_path, address_limit=NO_LIMIT) == Room(3 * GiB, 4 * GiB, 0, CGROUP)
    v1_limits(tmp_path, "slurm/uid_1000/job_42", V1_UNLIMITED, GiB)
    assert host_room(tmp_path, address_limit=NO_LIMIT) == Room(14 * GiB, 16 * GiB, 0, MACHINE)


def test_ulimit_v_leaves_the_address_space_not_yet_mapped(tmp_path):
    machine(tmp_path)  # the process maps 1 GiB already (VmSize)
    assert host_room(tmp_path, address_limit=4 * GiB) == Room(3 * GiB, 4 * GiB, 0, ULIMIT)
    assert host_room(tmp_path, address_limit=32 * GiB).where == MACHINE


@pytest.mark.parametrize("broken", ["memory.max", "memory.current", "memory.stat"])
def test_unreadable_cgroup_files_are_passed_over(tmp_path, broken):
    machine(tmp_path)
    v2(tmp_path, "/")
    v2_limits(tmp_path, "", str(8 * GiB), 3 * GiB)
    (tmp_path / "sys/fs/cgroup" / broken).write_text("" if broken != "memory.max" else "max\n")
    room = host_room(tmp_path, address_limit=NO_LIMIT)
    assert room.free <= 14 * GiB and room.total <= 16 * GiB


def test_lines_of_other_formats_are_passed_over(tmp_path):
    machine(tmp_path)
    v2(tmp_path, "/")
    v2_limits(tmp_path, "", str(8 * GiB), 3 * GiB)
    with open(tmp_path / "proc/self/cgroup", "a") as f:
        f.write("garbage without colons\n\n")
    with open(tmp_path / "proc/self/mountinfo", "a") as f:
        f.write("short line\n40 1 0:30 / relative/mount rw - cgroup2 cgroup2 rw\n")
    assert host_room(tmp_path, address_limit=NO_LIMIT) == Room(5 * GiB, 8 * GiB, 0, CGROUP)


def test_this_machine(tmp_path):
    """The real files of the machine the tests run on: the free room is within what it has."""
    if not sys.platform.startswith("linux"):
        pytest.skip("not Linux")
    room = host_room()  # on Linux, never unknown: /proc/meminfo is always there
    assert room is not None and 0 < room.free <= room.total and room.where in (MACHINE, CGROUP, ULIMIT)
