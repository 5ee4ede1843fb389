"""Shared tracking-server mode: a tiny table logged to the lab's server (harness.serve:
PostgreSQL, basic auth, bound to a reachable address), the credentials in the environment only."""
import pytest
from conftest import check_table3_on_server

pytestmark = pytest.mark.integration


def test_tiny_table_against_the_lab_tracking_server(tmp_path, tracking_server, snakemake, monkeypatch):
    for key, value in tracking_server.credentials().items():
        monkeypatch.setenv(key, value)
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", f"tracking_uri={tracking_server.url}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    check_table3_on_server(tmp_path, tracking_server, out)
