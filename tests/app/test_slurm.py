"""The SLURM path, run for real, and its job watcher.

``test_slurm_sweep_two_jobs_of_two_ddp_ranks`` (marker ``slurm``) submits a 2-job sweep through
``hydra/launcher=slurm``, each job DDP over 2 SLURM tasks (``trainer=ddp_cpu``, gloo), to an idle node,
and checks: each job ran 2 ranks (submitit's task 0 and 1 of 2, Lightning's "MEMBER: 1/2" and "2/2") and
wrote its results.json, whose figures equal a single-process ``eval.py`` of its checkpoint (1e-6
relative, as tests/app/test_ddp.py); the sweep's output says nothing about ``sacct``; afterwards no job
of the test is in ``squeue`` and none of its processes runs. It needs an idle SLURM node: ``.ci/run``
starts the one-node cluster of ``scripts/slurm_single_node.sh`` where it can (root and apt), and the
test is skipped with the reason elsewhere. It only submits to that cluster (``ClusterName=shiftprobe``),
or to the partition named by ``SHIFTPROBE_SLURM_PARTITION``.

The other tests need no cluster: the watcher (``hydra_plugins.shiftprobe_slurm_launcher``) with fake
``sacct`` and ``squeue`` commands, and Hydra's acceptance of the launcher plugin.
"""

import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, test_overrides
from test_ddp import assert_same_numbers

HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
needs_submitit = pytest.mark.skipif(
    not HAS_SUBMITIT, reason="hydra-submitit-launcher is not installed (pip install -e '.[dev]' or '.[sweep]')"
)

#: the job name of the test's SLURM jobs (to find them in squeue, and cancel them on failure)
JOB_NAME = "shiftprobe_slurm_test"
#: the cluster name in scripts/slurm_single_node.sh's slurm.conf
TEST_CLUSTER = "shiftprobe"
START = "sudo bash scripts/slurm_single_node.sh start"


# -- the cluster ------------------------------------------------------------------------------------------
def slurm(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def idle_partition() -> tuple[str | None, str]:
    """(partition to submit to, or None; why not)."""
    if not HAS_SUBMITIT:
        return None, "hydra-submitit-launcher is not installed (pip install -e '.[dev]')"
    if shutil.which("sinfo") is None:
        return None, (f"no SLURM here (sinfo not found); start a one-node cluster: {START} "
                      "(CI does where it runs as root with apt)")
    partition = os.environ.get("SHIFTPROBE_SLURM_PARTITION")
    try:
        if not partition:
            config = slurm("scontrol", "show", "config")
            names = [line.split("=", 1)[1].strip() for line in config.stdout.splitlines()
                     if line.startswith("ClusterName")]
            if config.returncode != 0 or not names:
                last = (config.stderr.strip().splitlines() or ["no answer"])[-1]
                return None, f"SLURM does not answer ({last}); start a one-node cluster: {START}"
            if names[0] != TEST_CLUSTER:
                return None, (f"the SLURM cluster here is {names[0]!r}, not the one-node test cluster of "
                              "scripts/slurm_single_node.sh: set SHIFTPROBE_SLURM_PARTITION=<partition> "
                              "to submit the test's 2 small jobs to it")
            partition = "debug"
        nodes = slurm("sinfo", "--noheader", "--Node", f"--partition={partition}", "--format=%t")
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"SLURM does not answer: {err}"
    states = nodes.stdout.split()
    if nodes.returncode != 0 or "idle" not in states:
        seen = states or (nodes.stderr.strip().splitlines() or ["no answer"])[-1]
        return None, f"no idle SLURM node in partition {partition!r} (sinfo: {seen})"
    return partition, ""


def our_jobs() -> list[str]:
    """The test's jobs that squeue still lists as pending, running or completing."""
    done = slurm("squeue", "--noheader", f"--name={JOB_NAME}", "--format=%i %T")
    return done.stdout.splitlines()


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text`` (e.g. the sweep folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State"))
        except (OSError, StopIteration):
            continue
        if text in cmd and "zombie" not in state:
            found.append(f"{proc.name}: {cmd[:200]}")
    return found


def wait_until(check, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(1)
    return check()


def run_cli(args: list[str], cwd: Path, timeout: float) -> tuple[str, str]:
    """``python <args>`` in a session of its own (a timeout ends all of it) -> (stdout, stderr)."""
    env = {**os.environ, "PROJECT_ROOT": str(ROOT), "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{args[0]} ran past {timeout} s:\n{out[-2000:]}\n{err[-3000:]}")
    assert proc.returncode == 0, (out[-2000:], err[-4000:])
    return out, err


@pytest.fixture
def partition():
    name, why = idle_partition()
    if name is None:
        pytest.skip(why)
    yield name
    slurm("scancel", f"--name={JOB_NAME}")  # after a failure: leave no job behind


# -- the sweep on the cluster -------------------------------------------------------------------------------
@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_sweep_two_jobs_of_two_ddp_ranks(partition, mnist_root, tmp_path):
    base = [a for a in test_overrides(mnist_root, tmp_path)
            if not a.startswith(("paths.output_dir", "callbacks=", "+trainer.enable_progress_bar"))]
    probe = ["callbacks=[model_checkpoint,shift_probe]", "callbacks.shift_probe.figures=false",
             "callbacks.shift_probe.progress=false", "shift=small"]
    launcher = [
        "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.tasks_per_node=2", f"hydra.launcher.partition={partition}",
        "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", f"hydra.launcher.name={JOB_NAME}",
    ]
    sweep = tmp_path / "sweep"
    started = time.monotonic()
    out, err = run_cli(
        [str(ROOT / "train.py"), "-m", *launcher, "trainer=ddp_cpu", "seed=0,1", *base, *probe,
         "+trainer.limit_train_batches=3", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, timeout=300,
    )
    sweep_s = time.monotonic() - started
    # no sacct noise: the launcher asks squeue where the cluster keeps no accounting
    assert "sacct" not in (out + err).lower(), (out + err)[-3000:]
    assert "accounting storage is disabled" not in (out + err).lower()

    # 2 SLURM jobs (one array, tasks 0 and 1), each of 2 tasks = 2 DDP ranks, each with its results.json
    job_logs = sorted(p for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    assert [p.name.split("_")[1] for p in job_logs] == ["0", "1"], job_logs
    for n, job_log in enumerate(job_logs):
        for rank in (0, 1):
            task_out = (job_log / f"{job_log.name}_{rank}_log.out").read_text()
            assert f"global_rank={rank}(2)" in task_out, task_out[-2000:]
        train_log = (sweep / str(n) / "train.log").read_text()
        assert "MEMBER: 1/2" in train_log and "MEMBER: 2/2" in train_log, train_log[-2000:]
        assert "Starting with 2 processes" in train_log
        assert (sweep / str(n) / "checkpoints" / "best.ckpt").is_file()

    # each job's figures equal one process's eval.py of its checkpoint (one eval.py sweep for both)
    ckpts = ",".join(str(sweep / str(n) / "checkpoints" / "best.ckpt") for n in (0, 1))
    single = tmp_path / "single"
    run_cli([str(ROOT / "eval.py"), "-m", f"ckpt_path={ckpts}", "trainer=cpu", *base, *probe,
             f"hydra.sweep.dir={single}"], cwd=tmp_path, timeout=240)
    for n in (0, 1):
        on_slurm = json.loads((sweep / str(n) / "results.json").read_text())
        one = json.loads((single / str(n) / "results.json").read_text())
        on_sec, one_sec = on_slurm["families"]["translation"], one["families"]["translation"]
        assert on_sec["n_images"] == one_sec["n_images"] == 200 and "untrained" in on_sec
        assert_same_numbers(on_slurm, one)
    seed_0, seed_1 = (json.loads((sweep / str(n) / "results.json").read_text()) for n in (0, 1))
    # two seeds, two trainings: not one job twice
    assert seed_0["families"]["translation"]["summary"] != seed_1["families"]["translation"]["summary"]

    # nothing left: no job of the test in squeue, no process of the sweep (a job's ranks exit after
    # writing their results, so give them time)
    assert wait_until(lambda: not our_jobs(), 90), our_jobs()
    assert wait_until(lambda: not processes_mentioning(str(sweep)), 30), processes_mentioning(str(sweep))
    print(f"SLURM sweep of 2 jobs x 2 ranks: {sweep_s:.0f} s")


# -- the watcher, with fake sacct and squeue ----------------------------------------------------------------
def fake_commands(tmp_path: Path, sacct: str, squeue: str) -> Path:
    """A folder with executable ``sacct`` and ``squeue`` shell scripts (bodies given); each call is logged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("sacct", sacct), ("squeue", squeue)):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {tmp_path}/calls\n{body}\n')
        script.chmod(0o755)
    return bin_dir


@pytest.fixture
def watcher_module():
    if not HAS_SUBMITIT:
        pytest.skip("hydra-submitit-launcher is not installed (pip install -e '.[dev]')")
    from hydra_plugins.shiftprobe_slurm_launcher import _queue_watcher

    return _queue_watcher


def test_watcher_without_accounting_asks_squeue_quietly(watcher_module, tmp_path, monkeypatch, capfd, caplog):
    queue = tmp_path / "queue"
    queue.write_text("7_0|RUNNING|vm\n7_1|PENDING|\n")
    bin_dir = fake_commands(tmp_path, sacct='echo "Slurm accounting storage is disabled" >&2; exit 1',
                            squeue=f"cat {queue}")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    watcher = watcher_module.QueueWatcher(delay_s=600)
    for job_id in ("7_0", "7_1"):
        watcher.register_job(job_id)
    with caplog.at_level(logging.INFO):
        assert watcher.get_state("7_0", mode="force") == "RUNNING"
        assert watcher.get_state("7_1", mode="cache") == "PENDING"
        assert not watcher.is_done("7_1", mode="cache")
        # 7_0 ends; 7_1 was cancelled and slurmctld forgot it: no longer listed, it has ended too
        queue.write_text("7_0|COMPLETED|vm\n")
        time.sleep(0.01)  # submitit ignores a forced poll less than 1 ms after the last one
        assert watcher.get_state("7_0", mode="force") == "COMPLETED"
        assert watcher.get_state("7_1", mode="cache") == watcher_module.NOT_IN_QUEUE
        assert watcher.is_done("7_1", mode="cache")
    calls = (tmp_path / "calls").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["sacct", "squeue", "squeue"]  # sacct asked once, quietly
    assert "--states=all" in calls[1] and f"--user={os.getuid()}" in calls[1]
    out, err = capfd.readouterr()
    assert out == err == ""
    assert [r.levelno for r in caplog.records] == [logging.INFO]  # "job states come from squeue", once
    assert "squeue" in caplog.records[0].getMessage()


def test_watcher_with_accounting_keeps_sacct(watcher_module, tmp_path, monkeypatch):
    bin_dir = fake_commands(
        tmp_path, sacct='printf "JobID|State|NodeList\\n8_0|RUNNING|vm\\n"', squeue="exit 1"
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    watcher = watcher_module.QueueWatcher(delay_s=600)
    watcher.register_job("8_0")
    assert watcher.get_state("8_0", mode="force") == "RUNNING"
    assert watcher.accounting is True
    assert [c.split()[0] for c in (tmp_path / "calls").read_text().splitlines()] == ["sacct", "sacct"]


@needs_submitit
def test_hydra_takes_the_slurm_launcher_plugin(mnist_root, tmp_path):
    """Hydra only instantiates launchers from the hydra_plugins package: ours is found there, and
    conf/hydra/launcher/slurm.yaml names it."""
    from conftest import compose_config
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    cfg = compose_config("train", [*test_overrides(mnist_root, tmp_path), "hydra/launcher=slurm"], tmp_path)
    target = cfg.hydra.launcher._target_
    assert target == "hydra_plugins.shiftprobe_slurm_launcher.slurm_launcher.SlurmLauncher"
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert target in found
