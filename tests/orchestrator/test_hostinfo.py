"""The embedded Ray is sized by the CPUs and memory this process may use, not the machine's."""

from __future__ import annotations

import os

from orchestrator.run.hostinfo import available_cpus, available_memory_bytes, cgroup_dirs, parse_cpu_max


def fake_cgroup(tmp_path, cpu_max=None, mem_max=None, mem_current=None):
    root = tmp_path / "cgroup"
    leaf = root / "system.slice" / "job.scope"
    leaf.mkdir(parents=True)
    for name, value in (("cpu.max", cpu_max), ("memory.max", mem_max), ("memory.current", mem_current)):
        if value is not None:
            (leaf / name).write_text(value + "\n")
    return cgroup_dirs("1:cpu:/\n0::/system.slice/job.scope\n", root=root)


def test_cgroup_dirs_walk_from_the_leaf_to_the_root(tmp_path):
    dirs = fake_cgroup(tmp_path)
    root = tmp_path / "cgroup"
    assert dirs == [root / "system.slice" / "job.scope", root / "system.slice", root]
    assert cgroup_dirs("4:memory:/x\n") == []  # cgroup v1 only: no v2 limits


def test_cpu_max_parsing():
    assert parse_cpu_max("max 100000") is None
    assert parse_cpu_max("200000 100000") == 2.0
    assert parse_cpu_max("150000 100000") == 1.5
    assert parse_cpu_max("garbage") is None


def test_quota_caps_the_affinity_mask(tmp_path):
    dirs = fake_cgroup(tmp_path, cpu_max="200000 100000")
    assert available_cpus(affinity=set(range(64)), dirs=dirs) == 2
    dirs = fake_cgroup(tmp_path / "b", cpu_max="150000 100000")
    assert available_cpus(affinity=set(range(64)), dirs=dirs) == 2  # 1.5 rounds up
    dirs = fake_cgroup(tmp_path / "c", cpu_max="max 100000")
    assert available_cpus(affinity={0, 3, 5}, dirs=dirs) == 3  # no quota: the mask
    assert available_cpus(affinity={0}, dirs=fake_cgroup(tmp_path / "d", cpu_max="800000 100000")) == 1


def test_this_process_never_exceeds_its_affinity():
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_memory_limit_of_the_cgroup_caps_mem_available(tmp_path):
    meminfo = "MemTotal: 64000000 kB\nMemAvailable: 32000000 kB\n"
    assert available_memory_bytes(meminfo, dirs=[]) == 32_000_000 * 1024
    dirs = fake_cgroup(tmp_path, mem_max=str(4 << 30), mem_current=str(1 << 30))
    assert available_memory_bytes(meminfo, dirs=dirs) == 3 << 30
    dirs = fake_cgroup(tmp_path / "b", mem_max="max")
    assert available_memory_bytes(meminfo, dirs=dirs) == 32_000_000 * 1024
