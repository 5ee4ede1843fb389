"""The lab's tracking server (harness.serve): what it refuses to start, and, started on
PostgreSQL, who it refuses to answer."""
import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness.serve import Server, ServerError, main


def password_file(tmp_path: Path, mode: int = 0o600, text: str = "a-long-enough-password") -> Path:
    path = tmp_path / "admin"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


def server(tmp_path: Path, **kw) -> Server:
    args = {"host": "127.0.0.1", "port": 5000, "database": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "artifacts": tmp_path / "artifacts", "state": tmp_path / "state"}
    if "admin_password_file" not in kw:
        kw["admin_password_file"] = password_file(tmp_path)
    return Server(**{**args, **kw})


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_password_file_others_can_read_is_refused(tmp_path, mode):
    with pytest.raises(ServerError, match=f"mode {mode:04o}: others could read the password; chmod 600"):
        server(tmp_path, admin_password_file=password_file(tmp_path, mode)).check()


def test_a_missing_or_short_password_is_refused(tmp_path):
    with pytest.raises(ServerError, match="does not exist"):
        server(tmp_path, admin_password_file=tmp_path / "nope").check()
    with pytest.raises(ServerError, match="shorter than 12"):
        server(tmp_path, admin_password_file=password_file(tmp_path, text="short")).check()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "login01"])
def test_no_auth_is_refused_on_any_address_but_loopback(tmp_path, host):
    with pytest.raises(ServerError, match="--no-auth binds only to the loopback address"):
        server(tmp_path, host=host, admin_password_file=None).check()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_no_auth_on_loopback_starts(tmp_path, host):
    s = server(tmp_path, host=host, admin_password_file=None)
    s.check()
    assert "--app-name" not in s.command() and "MLFLOW_AUTH_CONFIG_PATH" not in s.environment()


def test_a_database_url_with_a_password_is_refused(tmp_path):
    with pytest.raises(ServerError, match="has a password in it.*~/.pgpass"):
        server(tmp_path, database="postgresql://randsac:secret@127.0.0.1:5432/mlflow").check()


def test_a_database_that_does_not_answer_is_one_line(tmp_path):
    from conftest import free_port

    url = f"postgresql://randsac@127.0.0.1:{free_port()}/mlflow"
    with pytest.raises(ServerError, match=f"--database {url} does not answer: .*Connection refused"):
        server(tmp_path, database=url).check()


def test_secrets_travel_in_the_environment_and_private_files_not_the_command_line(tmp_path):
    s = server(tmp_path, host="192.0.2.7", port=5123)
    s.check()
    s.write_state()
    env, cmd = s.environment(), s.command()
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "a-long-enough-password"
    assert not any("a-long-enough-password" in part for part in cmd)
    assert cmd[cmd.index("--app-name") + 1] == "basic-auth" and "--serve-artifacts" in cmd
    assert cmd[cmd.index("--host") + 1] == "192.0.2.7"
    assert "192.0.2.7:5123" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")  # Host headers it answers
    assert "a-long-enough-password" not in (s.state / "basic_auth.ini").read_text()
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in s.state.iterdir()} == \
        {"basic_auth.ini": "0o600", "secret_key": "0o600"}
    assert s.state.stat().st_mode & 0o777 == 0o700


def test_the_command_line_check_prints_one_line_per_problem(tmp_path, capsys):
    code = main(["--host", "0.0.0.0", "--no-auth", "--database", f"sqlite:///{tmp_path}/db"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("randsac-harness: error: --no-auth")
    assert main(["--host", "127.0.0.1", "--database", f"sqlite:///{tmp_path}/db", "--admin-password-file",
                 str(password_file(tmp_path)), "--check"]) == 0
    assert not (tmp_path / "results").exists()  # a check starts and writes nothing


# --- a real server on PostgreSQL -------------------------------------------------------------

def request(url: str, user: str | None = None, password: str | None = None, body: dict | None = None) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    if user is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.integration
def test_the_server_refuses_strangers_wrong_passwords_and_what_a_user_may_not_do(tracking_server, monkeypatch):
    import mlflow

    s = tracking_server
    assert s.host != "127.0.0.1" or pytest.skip("no address but loopback on this machine")
    api = f"{s.url}/api/2.0/mlflow"
    search = f"{api}/experiments/get-by-name?experiment_name=Default"
    assert request(f"{s.url}/health") == 200  # the health check needs no password
    assert request(search) == 401
    assert request(search, s.user, "wrong-password") == 401
    assert request(search, s.user, s.password) == 200

    from mlflow.server import get_app_client

    with monkeypatch.context() as admin:  # the admin's credentials, as MLflow's clients read them
        for key, value in s.credentials().items():
            admin.setenv(key, value)
        experiment = mlflow.MlflowClient(s.url).create_experiment("admins-only")
        users = get_app_client("basic-auth", tracking_uri=s.url)
        users.create_user("guest", "guest-pw-123456")
    guest, run = ("guest", "guest-pw-123456"), {"experiment_id": experiment}
    assert request(f"{api}/runs/create", *guest, run) == 200  # a lab member logs (the default, EDIT)
    assert request(f"{api}/experiments/delete", *guest, run) == 403  # and deletes only what they manage
    with monkeypatch.context() as admin:
        for key, value in s.credentials().items():
            admin.setenv(key, value)
        users.grant_user_permission("guest", "experiment", experiment, "DENY")
    assert request(f"{api}/runs/create", *guest, run) == 403
    assert request(f"{api}/experiments/get?experiment_id={experiment}", *guest) == 403
    assert request(f"{api}/runs/create", s.user, s.password, run) == 200


@pytest.mark.integration
def test_a_workflow_without_credentials_is_refused_before_any_job(tmp_path, tracking_server, snakemake, monkeypatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", f"tracking_uri={tracking_server.url}")
    assert out.returncode != 0
    assert "asks for credentials (401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in out.stderr
    assert not (tmp_path / "results" / "runs").exists()  # no job started

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password")
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", f"tracking_uri={tracking_server.url}")
    assert out.returncode != 0 and "refuses the password of user admin (401)" in out.stderr
    assert not (tmp_path / "results" / "runs").exists()


def test_a_tracking_uri_with_a_password_is_refused_at_planning(tmp_path, snakemake):
    out = snakemake(tmp_path, "-n", "table3", "--config", "scale=tiny", "tracking_uri=http://admin:pw@127.0.0.1:1")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("randsac-harness: error: the tracking URI carries a password")


def test_serve_is_a_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness.serve", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--admin-password-file" in out.stdout and "--no-auth" in out.stdout
