"""How much of the host's memory a model on the CPU can take before the kernel ends the process.

Past that point Linux's OOM killer stops glmv with a bare "Killed" (exit 137, no message, a chat's
history lost), so a CPU load is checked against it first, as a GPU load is against the card's free
memory. The room is the least of:

- the machine's available memory (`MemAvailable` in /proc/meminfo: free memory plus the page
  cache and other memory the kernel can take back);
- what each cgroup above the process allows (a container's `docker run -m`, a systemd unit's
  `MemoryMax=`, a batch job's allocation): its limit less its usage, its file cache counted as
  free, for cgroup v2 and v1 alike;
- what `ulimit -v` leaves of the address space.

Swap counts only where the machine's memory is what binds (a cgroup's swap allowance is not
known here). Linux only: elsewhere the room is not known (None), and nothing is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

MACHINE = "this machine's memory"
CGROUP = "the cgroup memory limit of this container or service"
ULIMIT = "the address-space limit set by ulimit -v"
REMEDIES = {
    MACHINE: "close other programs to free memory",
    CGROUP: "raise the limit (docker run -m, systemd MemoryMax=) or close other programs in it",
    ULIMIT: "raise it (ulimit -v unlimited)",
}


class Room(NamedTuple):
    """Free and total bytes for a model on a device (memory.device_room); on a CPU also the free
    swap and what binds."""

    free: int  # bytes the process can still take
    total: int  # the device's memory, or the binding limit: the machine's, the cgroup's, the address space
    swap: int = 0  # free swap the weights could spill into (0 where a cgroup or ulimit binds)
    where: str = ""  # on a CPU, which of MACHINE, CGROUP, ULIMIT binds (REMEDIES says what to do about it)


def host_room(root: Path = Path("/"), address_limit: int | None = None) -> Room | None:
    """The host's room for this process (the least of the three above); None off Linux. `root`
    and `address_limit` (the RLIMIT_AS soft limit; None: this process's) are for tests."""
    info = _fields(root / "proc/meminfo", ":")
    if "MemAvailable" not in info or "MemTotal" not in info:
        return None
    rooms = [Room(info["MemAvailable"] * 1024, info["MemTotal"] * 1024, info.get("SwapFree", 0) * 1024, MACHINE)]
    rooms += [Room(free, limit, 0, CGROUP) for free, limit in _cgroup_rooms(root)]
    import resource  # (Unix only: imported past the Linux check, so Windows never gets here)

    limit = resource.getrlimit(resource.RLIMIT_AS)[0] if address_limit is None else address_limit
    if limit != resource.RLIM_INFINITY:
        used = _fields(root / "proc/self/status", ":").get("VmSize", 0) * 1024
        rooms.append(Room(max(0, limit - used), limit, 0, ULIMIT))
    return min(rooms, key=lambda r: r.free)


def _cgroup_rooms(root: Path) -> list[tuple[int, int]]:
    """(free, limit) of every cgroup from this process's up to its hierarchy's top that has a
    memory limit: v2's memory.max, v1's memory.limit_in_bytes (v1 writes "no limit" as a number
    near 2**63, v2 as "max")."""
    rooms = []
    for folder, mount in _cgroup_folders(root):
        for top in [folder, *folder.parents]:
            limit = _number(top / "memory.max") or _number(top / "memory.limit_in_bytes")
            if limit is not None and limit < 2**60:
                usage = _number(top / "memory.current") or _number(top / "memory.usage_in_bytes") or 0
                stat = _fields(top / "memory.stat", " ")
                cache = (stat.get("active_file", 0) + stat.get("inactive_file", 0)
                         or stat.get("total_active_file", 0) + stat.get("total_inactive_file", 0))
                rooms.append((max(0, limit - usage + cache), limit))
            if top == mount:
                break
    return rooms


def _cgroup_folders(root: Path) -> list[tuple[Path, Path]]:
    """(folder, mount point) of this process's cgroup in each mounted hierarchy that has the memory
    controller (the walk up from the folder stops at the mount point): the
    cgroup2 mount, and a cgroup (v1) mount with the `memory` option. In a container whose cgroup
    path lies outside the mount's root, the mount point itself is the container's cgroup."""
    paths = {}  # hierarchy: "" for v2, "memory" for v1 -> this process's cgroup path in it
    for line in _lines(root / "proc/self/cgroup"):
        if line.count(":") < 2:  # (not a cgroup line: nothing to learn from it)
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "" or "memory" in controllers.split(","):
            paths["" if controllers == "" else "memory"] = path
    folders = []
    for line in _lines(root / "proc/self/mountinfo"):
        fields = line.split()
        if " - " not in line or len(fields) < 5 or not fields[4].startswith("/"):
            continue
        post = line.split(" - ", 1)[1].split()
        fstype, options = post[0], post[2].split(",") if len(post) > 2 else []
        hierarchy = "" if fstype == "cgroup2" else "memory" if fstype == "cgroup" and "memory" in options else None
        if hierarchy is None or hierarchy not in paths:
            continue
        mount_root, mount_point, path = fields[3], Path(fields[4]), paths[hierarchy]
        inside = path.startswith(mount_root)
        relative = path[len(mount_root):].strip("/") if inside else ""
        mount = root / mount_point.relative_to("/")
        folders.append((mount / relative if relative else mount, mount))
    return folders


def _number(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # missing, "max" (no limit), empty
        return None


def _fields(path: Path, separator: str) -> dict[str, int]:
    """'Name: 123 kB' or 'name 123' lines as {name: 123}; unreadable files give {}."""
    out = {}
    for line in _lines(path):
        name, _, rest = line.partition(separator)
        value = rest.split()
        if value and value[0].isdigit():
            out[name.strip()] = int(value[0])
    return out


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
