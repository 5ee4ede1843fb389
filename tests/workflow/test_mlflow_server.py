"""Shared tracking-server mode: a tiny table logged to the lab's server (harness.serve:
PostgreSQL, basic auth, bound to a reachable address), the credentials in the environment only."""
import mlflow
import pytest
from conftest import files_holding, rows_holding

pytestmark = pytest.mark.integration


def test_tiny_table_against_the_lab_tracking_server(tmp_path, tracking_server, snakemake, monkeypatch):
    for key, value in tracking_server.credentials().items():
        monkeypatch.setenv(key, value)
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", f"tracking_uri={tracking_server.url}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    results = tmp_path / "results"
    assert not (results / "mlflow.db").exists()  # nothing went to the local sqlite store
    assert "square M=2" in (results / "tables" / "table3.md").read_text()
    client = mlflow.MlflowClient(tracking_server.url)
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id])
    assert len(runs) == 11 and {r.info.status for r in runs} == {"FINISHED"}
    pretrain = next(r for r in runs if r.data.tags["stage"] == "pretrain")
    assert pretrain.info.artifact_uri.startswith("mlflow-artifacts:/")  # the server keeps them, proxied
    assert "reconstruction.png" in {a.path for a in client.list_artifacts(pretrain.info.run_id)}
    assert list((tracking_server.root / "artifacts").rglob("reconstruction.png"))
    assert any(k.startswith("system/") for k in pretrain.data.metrics)  # sampled beside the stage

    # the password reached the jobs through their environment and was written nowhere
    secret, run_id = tracking_server.password, pretrain.info.run_id
    assert files_holding(results, run_id) and "runs" in rows_holding(tracking_server.database, run_id)  # they do find
    assert files_holding(results, secret) == []  # job.json, config.yaml, submitit pickles and logs
    assert files_holding(tmp_path / ".snakemake", secret) == []
    assert rows_holding(tracking_server.database, secret) == []  # params, tags, the users' table (hashed)
    assert secret not in out.stdout + out.stderr
