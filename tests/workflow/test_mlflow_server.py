"""Shared tracking-server mode: a real `mlflow server` on 127.0.0.1, a tiny table logged to it."""
import mlflow
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
def mlflow_server(tmp_path, start_mlflow):
    store = tmp_path / "server"
    store.mkdir()
    return start_mlflow("server", store / "mlflow.db", store / "artifacts", cwd=store)


def test_tiny_table_against_a_tracking_server(tmp_path, mlflow_server, snakemake):
    out = snakemake(tmp_path, "table3", "--config", "scale=tiny", f"tracking_uri={mlflow_server}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not (tmp_path / "results" / "mlflow.db").exists()  # nothing went to the local sqlite store
    assert "square M=2" in (tmp_path / "results" / "tables" / "table3.md").read_text()
    client = mlflow.MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("randsac-harness").experiment_id])
    assert len(runs) == 11 and {r.info.status for r in runs} == {"FINISHED"}
    pretrain = next(r for r in runs if r.data.tags["stage"] == "pretrain")
    assert "reconstruction.png" in {a.path for a in client.list_artifacts(pretrain.info.run_id)}
    assert pretrain.info.artifact_uri.startswith("mlflow-artifacts:/")  # the server keeps them, proxied
