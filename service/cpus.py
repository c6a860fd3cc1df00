"""How many CPUs this process may really use, and the ONNX Runtime threads that follow from it.

`os.cpu_count()` counts the host's cores. A container limited by a CPU quota (cgroup v2
`cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`) or pinned to some cores
(`sched_setaffinity`, cpusets) may use fewer: ONNX Runtime's default of one thread per core,
for each of a worker's three sessions, in each of N workers, then oversubscribes the quota and
the kernel throttles the process. Quotas apply along the whole cgroup path, so the smallest
one from the process's cgroup up to the root counts; a fractional quota is rounded down.
"""

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """CPUs this process may use: its affinity, lowered to its cgroup CPU quota (at least 1)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return cpus


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The CPU quota (in CPUs) of this process's cgroup and its ancestors; None when unlimited or unknown."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    if (cgroup_root / "cgroup.controllers").exists():  # cgroup v2 (unified hierarchy)
        paths = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
        return _smallest(_ancestors(cgroup_root, paths), _v2_quota)
    for line in lines:  # cgroup v1: the hierarchy that holds the cpu controller
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return _smallest(_ancestors(cgroup_root / "cpu", [path]), _v1_quota)
    return None


def onnx_intra_op_threads(setting: int, workers: int, cpus: int) -> int:
    """Threads per ONNX Runtime session: `setting` when positive, else an equal share of the CPUs
    per worker. A worker runs its three sessions one after another (one micro-batch at a time:
    image encoder, text encoder, item tower), so each session may use the worker's whole share."""
    return setting if setting > 0 else max(1, cpus // workers)


def _ancestors(root: Path, paths: list[str]) -> list[Path]:
    """The process's cgroup folder and its parents up to `root`. Inside a container the path in
    /proc/self/cgroup may be the host's, absent from the container's mount: then `root` alone."""
    if not paths:
        return [root]
    folder = root / paths[0].lstrip("/")
    if not folder.is_dir():
        return [root]
    return [folder, *[parent for parent in folder.parents if parent.is_relative_to(root)]]


def _smallest(folders: list[Path], read: Callable[[Path], float | None]) -> float | None:
    return min((quota for quota in map(read, folders) if quota is not None), default=None)


def _v2_quota(folder: Path) -> float | None:
    """`cpu.max` holds "QUOTA PERIOD" in microseconds, QUOTA "max" when unlimited."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_quota(folder: Path) -> float | None:
    """`cpu.cfs_quota_us` is -1 when unlimited."""
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period
