"""CPU quota from cgroup files (fake trees under tmp_path) and the ONNX Runtime threads it leads to."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from bundle_factory import FactoryBundle

from cliper.bundle import IMAGE_ENCODER
from service.cpus import cgroup_cpu_quota, onnx_intra_op_threads, usable_cpus


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


V2 = {"cgroup.controllers": "cpuset cpu io memory pids\n"}
V1 = {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}
QUOTAS = [
    ("v2 no limit", {**V2, "cpu.max": "max 100000\n"}, "0::/\n", None),
    ("v2 two and a half cpus", {**V2, "cpu.max": "250000 100000\n"}, "0::/\n", 2.5),
    ("v2 limit on a parent", {**V2, "app/cpu.max": "150000 100000\n", "app/worker/cpu.max": "max 100000\n"},
     "0::/app/worker\n", 1.5),
    ("v2 smallest along the path", {**V2, "app/cpu.max": "400000 100000\n", "app/worker/cpu.max": "200000 50000\n"},
     "0::/app/worker\n", 4.0),
    ("v2 host path absent in container", {**V2, "cpu.max": "300000 100000\n"}, "0::/docker/abc123\n", 3.0),
    ("v2 other period", {**V2, "cpu.max": "50000 20000\n"}, "0::/\n", 2.5),
    ("v1 no limit", V1, "4:cpu,cpuacct:/\n3:memory:/\n", None),
    ("v1 quota", {**V1, "cpu/cpu.cfs_quota_us": "200000\n"}, "4:cpu,cpuacct:/\n", 2.0),
    ("v1 nested", {**V1, "cpu/batch/cpu.cfs_quota_us": "150000\n", "cpu/batch/cpu.cfs_period_us": "100000\n"},
     "2:cpuacct,cpu:/batch\n1:memory:/batch\n", 1.5),
    ("v1 host path absent in container", {**V1, "cpu/cpu.cfs_quota_us": "100000\n"}, "4:cpu,cpuacct:/docker/abc\n",
     1.0),
    ("v1 without a cpu hierarchy", {"memory/memory.limit_in_bytes": "1\n"}, "3:memory:/\n", None),
    ("unreadable cpu.max", {**V2, "cpu.max": "garbage\n"}, "0::/\n", None),
]


@pytest.mark.parametrize(("case", "files", "proc", "expected"), QUOTAS, ids=[c[0] for c in QUOTAS])
def test_cgroup_quota(tmp_path: Path, case: str, files: dict[str, str], proc: str, expected: float | None) -> None:
    write(tmp_path / "cgroup", files)
    write(tmp_path, {"proc-cgroup": proc})
    assert cgroup_cpu_quota(tmp_path / "cgroup", tmp_path / "proc-cgroup") == expected


def test_no_cgroup_files_means_no_quota(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path / "missing-proc") is None


def test_usable_cpus_is_the_quota_rounded_down_within_the_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    write(tmp_path, {"proc-cgroup": "0::/\n", **{f"cgroup/{k}": v for k, v in V2.items()}})
    cpu_max = tmp_path / "cgroup" / "cpu.max"
    for quota, expected in (("150000", 1), ("50000", 1), ("max", affinity), (str(1000 * 100000), affinity)):
        cpu_max.write_text(f"{quota} 100000\n")
        assert usable_cpus(tmp_path / "cgroup", tmp_path / "proc-cgroup") == expected, quota


def test_usable_cpus_follows_the_affinity_of_the_process() -> None:
    script = "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); " \
             "from service.cpus import usable_cpus; print(usable_cpus())"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "1"


@pytest.mark.parametrize(("setting", "workers", "cpus", "expected"),
                         [(0, 1, 8, 8), (0, 3, 8, 2), (0, 16, 8, 1), (0, 2, 1, 1), (4, 3, 8, 4), (1, 1, 64, 1)])
def test_intra_op_threads(setting: int, workers: int, cpus: int, expected: int) -> None:
    assert onnx_intra_op_threads(setting, workers, cpus) == expected


SESSION_THREADS = """
import os, sys
from service.encoders import OnnxModel
before = len(os.listdir("/proc/self/task"))
model = OnnxModel(sys.argv[1], ["CPUExecutionProvider"], int(sys.argv[2]), ["pixel_values"])
options = model.session.get_session_options()
print(len(os.listdir("/proc/self/task")) - before, options.intra_op_num_threads, options.inter_op_num_threads)
"""


@pytest.mark.parametrize("threads", [1, 3])
def test_a_session_runs_with_the_threads_it_is_given(factory: FactoryBundle, threads: int) -> None:
    """ONNX Runtime's intra-op pool has threads - 1 threads (the calling thread is the other one);
    counted in a fresh process, where no other thread comes or goes meanwhile."""
    path = str(factory.path / IMAGE_ENCODER)
    result = subprocess.run([sys.executable, "-c", SESSION_THREADS, path, str(threads)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(threads - 1), str(threads), "1"], result.stderr


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_the_service_shares_the_usable_cpus_among_its_workers(make_client, workers: int) -> None:
    with make_client(workers=workers) as client:
        encoder = client.app.state.services.encoder
        for model in (encoder.image, encoder.text, encoder.tower):
            options = model.session.get_session_options()
            assert options.intra_op_num_threads == max(1, usable_cpus() // workers)
            assert options.inter_op_num_threads == 1
