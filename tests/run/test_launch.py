"""The launch entry point a Snakemake job runs."""


def test_launch_refuses_a_config_without_the_signature_asked_for(tmp_path, tiny_cfg, monkeypatch):
    import json
    import os

    from harness.run.launch import main

    monkeypatch.setenv("RANDSAC_USER_UMASK", "022")  # main narrows this process's umask for its jobs: undone after
    mask = os.umask(0o022)
    os.umask(mask)

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"config": tiny_cfg().model_dump(mode="json"), "executor": {},
                               "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "tags": {}}))
    try:
        code = main(["--stage", "pretrain", "--results", str(tmp_path / "results"), "--signature", "000000000000",
                     "--job", str(job)])
    finally:
        os.umask(mask)
    assert code == 2 and not (tmp_path / "results" / "runs").exists()


def test_a_local_job_that_missed_the_first_sigterm_is_still_stopped(tmp_path):
    """A task still starting up has submitit's SIGTERM handler, which ignores the signal; the
    launcher sends it again until the task stops (and does not wait out its grace)."""
    import subprocess
    import sys
    import time

    from harness.run.launch import stop_local_job

    script = ("import signal, time\n"
              "seen = []\n"
              "signal.signal(signal.SIGTERM, lambda *_: seen.append(1))\n"
              "print('ready', flush=True)\n"
              "while len(seen) < 2: time.sleep(0.05)\n")  # the first SIGTERM is ignored
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"

    class Job:
        job_id = str(proc.pid)

        def done(self):
            return proc.poll() is not None

        def cancel(self, check=False):
            proc.kill()

    start = time.time()
    stop_local_job(Job(), grace_s=60, resend_s=0.5)
    assert proc.returncode == 0  # it stopped by itself on the second SIGTERM, not cancelled
    assert time.time() - start < 30


def test_a_failed_job_is_reported_by_its_own_last_error_line():
    """submitit's FailedJobError ends with the paths of the logs; the reason is the job's error."""
    import submitit

    from harness.run.launch import error_line

    err = submitit.core.utils.FailedJobError(
        "Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent call "
        "last):\n  File \"engine.py\", line 9, in fit\nharness.core.errors.NonFiniteLoss: loss is nan at epoch 1/2\n\n"
        "----------------------\nYou can check full logs with 'job.stderr(0)' and 'job.stdout(0)'or at paths:\n"
        "  - /r/1_0_log.err\n  - /r/1_0_log.out")
    assert error_line(err) == "harness.core.errors.NonFiniteLoss: loss is nan at epoch 1/2"
    assert error_line(RuntimeError("first\nlast")) == "RuntimeError: last"


def test_jobs_get_the_executors_openmp_spin_unless_the_user_set_a_wait(tmp_path, tiny_cfg, monkeypatch):
    """A job's environment holds GOMP_SPINCOUNT when the executor asks for one and neither OpenMP
    wait variable is set; the launcher puts it there before submitit starts or sbatch exports
    the job. By default OpenMP's own wait stays; jobs take CPU turns unless the executor says not to."""
    import os

    from harness.core.layout import Results
    from harness.run import launch
    from harness.run.executor import ExecutorConfig, job_environment

    assert job_environment(ExecutorConfig(), {}) == {}
    assert job_environment(ExecutorConfig(cpu_turns=False), {}) == {"HARNESS_CPU_TURNS": "0"}
    assert job_environment(ExecutorConfig(gomp_spincount=1000), {}) == {"GOMP_SPINCOUNT": "1000"}
    assert job_environment(ExecutorConfig(gomp_spincount=20000), {"PATH": "/bin"}) == {"GOMP_SPINCOUNT": "20000"}
    for users in ({"OMP_WAIT_POLICY": "passive"}, {"GOMP_SPINCOUNT": "300000"}):
        assert job_environment(ExecutorConfig(gomp_spincount=1000), users) == {}

    seen = []

    class Recorder:  # what the submitit executor would start the job with
        def update_parameters(self, **_):
            pass

        def submit(self, job):
            seen.append(os.environ.get("GOMP_SPINCOUNT"))

    monkeypatch.setattr(launch, "make_executor", lambda *a, **k: Recorder())
    monkeypatch.setattr(os, "environ", dict(os.environ))  # what submit puts there stays in this test
    for name in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    launch.submit("pretrain", tiny_cfg(), Results(tmp_path / "results"), ExecutorConfig(gomp_spincount=1234),
                  tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setenv("GOMP_SPINCOUNT", "77")
    launch.submit("pretrain", tiny_cfg(), Results(tmp_path / "results"), ExecutorConfig(gomp_spincount=1234),
                  tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    launch.submit("pretrain", tiny_cfg(), Results(tmp_path / "results"), ExecutorConfig(),
                  tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    assert seen == ["1234", "77", None]
