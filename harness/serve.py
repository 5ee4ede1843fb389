"""A tracking server a lab can share: MLflow's server with its basic-auth app on, runs kept in
PostgreSQL (or any database URL), artifacts proxied through the server (`mlflow-artifacts:`).

    python -m harness.serve --host login01 --database postgresql://randsac@dbhost:5432/mlflow \\
        --admin-password-file ~/.config/randsac/mlflow-admin

- The admin's password comes from a file only its owner can read (mode 0600), never from the
  command line; the database's password from libpq's own `~/.pgpass` (or PGPASSFILE), never
  from the URL. The server gets both through its environment.
- `--host` names the address the compute nodes reach (the login node's name or address).
  Without auth (`--no-auth`) the server binds to the loopback address only.
- Jobs log to it with `tracking_uri: http://login01:5000` and their user's credentials in their
  environment (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD; docs/running.md).

It runs in the foreground (a tmux pane, a systemd unit); `--check` says what it would start.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import shutil
import socket
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
ALL_INTERFACES = ("0.0.0.0", "::", "")


class ServerError(ValueError):
    """A server that must not start, in one line."""


@dataclass(frozen=True)
class Server:
    """What `mlflow server` is started with; every check is made before anything starts."""

    host: str
    port: int
    database: str
    artifacts: Path
    state: Path
    admin_password_file: Path | None  # None: no auth (loopback only)
    admin_user: str = "admin"
    default_permission: str = "EDIT"
    workers: int = 4
    auth_cache_s: int = 60

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def check(self) -> None:
        """Refuse, with one line, what would make an open or a broken server."""
        if self.admin_password_file is None and not loopback(self.host):
            where = "every interface" if self.host in ALL_INTERFACES else self.host
            raise ServerError(f"--no-auth binds only to the loopback address (127.0.0.1), not to {where}: anyone "
                              f"who reaches it could write or delete runs; give --admin-password-file instead")
        if self.admin_password_file is not None:
            admin_password(self.admin_password_file)
        parts = urlsplit(self.database)
        if parts.password:
            raise ServerError("--database has a password in it, which `ps` and shell histories show: give the URL "
                               "without it and put the password in ~/.pgpass (libpq's file, mode 0600; or PGPASSFILE)")
        if self.default_permission not in PERMISSIONS:
            raise ServerError(f"--default-permission {self.default_permission}: one of {', '.join(PERMISSIONS)}")
        database_answers(self.database)

    def environment(self) -> dict[str, str]:
        """The server's environment: its secrets travel here, not on its command line."""
        env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": self.database,
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner: the server stops cleanly
               "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(self.allowed_hosts())}
        if self.admin_password_file is not None:
            env.update({"MLFLOW_AUTH_CONFIG_PATH": str(self.state / "basic_auth.ini"),
                        "MLFLOW_AUTH_ADMIN_USERNAME": self.admin_user,
                        "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password(self.admin_password_file),
                        "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secret_key()})
        return env

    def command(self) -> list[str]:
        mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        cmd = [mlflow, "server", "--host", self.host, "--port", str(self.port), "--workers", str(self.workers),
               "--serve-artifacts", "--artifacts-destination", str(self.artifacts.resolve())]
        if self.admin_password_file is not None:
            cmd += ["--app-name", "basic-auth"]
        return cmd

    def allowed_hosts(self) -> list[str]:
        """Host headers the server answers (MLflow refuses others, against DNS rebinding): its
        own name and address, and the loopback names a tunnel to it arrives with."""
        names = {self.host, "localhost", "127.0.0.1", "[::1]"} - {""}
        if self.host in ALL_INTERFACES:
            names |= {socket.gethostname(), socket.getfqdn()}
        return sorted({p for n in names for p in (n, f"{n}:{self.port}")})

    def write_state(self) -> None:
        """The auth app's settings, in a folder only this user reads (0700): the users and
        their permissions live in the same database as the runs (one thing to back up)."""
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o700)
        if self.admin_password_file is None:
            return
        ini = (f"[mlflow]\ndefault_permission = {self.default_permission}\ndatabase_uri = {self.database}\n"
               f"admin_username = {self.admin_user}\n"
               f"authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
               f"auth_cache_ttl_seconds = {self.auth_cache_s}\n")
        write_private(self.state / "basic_auth.ini", ini)

    def secret_key(self) -> str:
        """The Flask secret behind the auth app's CSRF tokens: kept, so a restart keeps sessions."""
        path = self.state / "secret_key"
        if not path.exists():
            self.state.mkdir(parents=True, exist_ok=True)
            write_private(path, secrets.token_hex(32))
        return path.read_text().strip()


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def admin_password(path: Path) -> str:
    """The admin's password from `path`, which must be this user's and readable by no one else."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ServerError(f"--admin-password-file {path} does not exist: write the password into it "
                           f"(one line) and chmod 600 it") from None
    if not stat.S_ISREG(st.st_mode):
        raise ServerError(f"--admin-password-file {path} is not a file")
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ServerError(f"--admin-password-file {path} is mode {stat.S_IMODE(st.st_mode):04o}"
                           f"{'' if st.st_uid == os.getuid() else ' and not yours'}: others could read the password; "
                           f"chmod 600 {path}")
    password = path.read_text().strip()
    if len(password) < 12:
        raise ServerError(f"--admin-password-file {path}: the password is shorter than 12 characters")
    return password


def database_answers(url: str, timeout_s: int = 10) -> None:
    """Connect once before the server starts, so a wrong URL is one line here, not a traceback
    in each of its workers."""
    import sqlalchemy

    args = {"connect_timeout": timeout_s} if url.startswith("postgresql") else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as err:  # noqa: BLE001 -- any driver's error: its first line says why
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = " (libpq reads it from ~/.pgpass, or the file PGPASSFILE names)" if "password" in first else ""
        raise ServerError(f"--database {url} does not answer: {first}{hint}") from None


def write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def parse(argv: list[str] | None) -> tuple[Server, bool]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--host", required=True, help="the address the compute nodes reach (this machine's name or IP)")
    ap.add_argument("--port", type=int, default=5000)
    ap.add_argument("--database", required=True,
                    help="SQLAlchemy URL of the runs' database, without its password, e.g. "
                         "postgresql://randsac@dbhost:5432/mlflow (cluster/postgres.sh makes one)")
    ap.add_argument("--artifacts", type=Path, default=Path("results/mlartifacts"), help="where artifacts are kept")
    ap.add_argument("--state", type=Path, default=Path("results/tracking-server"),
                    help="the server's own settings (mode 0700)")
    auth = ap.add_mutually_exclusive_group(required=True)
    auth.add_argument("--admin-password-file", type=Path, help="the admin's password (a file of mode 0600)")
    auth.add_argument("--no-auth", action="store_true", help="no authentication; loopback address only")
    ap.add_argument("--admin-user", default="admin")
    ap.add_argument("--default-permission", default="EDIT",
                    help=f"what every user may do with experiments they did not create ({', '.join(PERMISSIONS)}); "
                         "EDIT lets a lab's members log to one experiment")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--auth-cache-s", type=int, default=60,
                    help="how long a worker trusts a checked password (0: check every request, a PBKDF2 hash "
                         "each time; docs/findings.md); a changed password reaches every worker within it")
    ap.add_argument("--check", action="store_true", help="check everything, print the command, start nothing")
    args = ap.parse_args(argv)
    return Server(args.host, args.port, args.database, args.artifacts, args.state,
                  None if args.no_auth else args.admin_password_file.expanduser(), args.admin_user,
                  args.default_permission, args.workers, args.auth_cache_s), args.check


def main(argv: list[str] | None = None) -> int:
    server, check_only = parse(argv)
    try:
        server.check()
    except ServerError as err:
        print(f"randsac-harness: error: {err}", file=sys.stderr)
        return 2
    auth = f"basic auth (admin: {server.admin_user})" if server.admin_password_file else "NO auth, loopback only"
    print(f"[harness] tracking server {server.url}: runs in {server.database}, artifacts in {server.artifacts}, "
          f"{auth}", flush=True)
    if check_only:
        print(" ".join(server.command()))
        return 0
    server.write_state()
    server.artifacts.mkdir(parents=True, exist_ok=True)
    os.execve(server.command()[0], server.command(), server.environment())
    return 0  # not reached: the server replaces this process


if __name__ == "__main__":
    sys.exit(main())
