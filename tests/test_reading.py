"""Reading the results as a researcher does: the status of a running table, LaTeX that
compiles, the MLflow UI in a real browser on a copied results folder."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from harness.core.layout import Results
from harness.studies import available_studies, expand, load_study
from harness.tables import render

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "results" / "screenshots"  # kept for a person to look at (git-ignored)


def status(workdir: Path, *config: str) -> str:
    out = subprocess.run([sys.executable, "-m", "harness.status", "table3", "--directory", str(workdir),
                          "--config", *config], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.integration
def test_status_of_a_running_table(tmp_path, start_snakemake, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = ["scale=tiny", "pretrain={epochs: 6}", "data={train_subset: 1024}", "controls=false"]
    before = status(tmp_path, *config)
    assert before.count("not started") == 9 + 1  # every run, and the summary line
    proc = start_snakemake(tmp_path, "table3", "--config", *config)
    try:
        deadline = time.time() + 600
        while not list((tmp_path / "results" / "runs").glob("*/progress.json")):
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.5)
        during = status(tmp_path, *config)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    running = [line for line in during.splitlines() if line.startswith("running")]
    assert len(running) == 1 and "local job" in running[0] and "/6," in running[0] and "ETA" in running[0]
    assert during.count("not started") == 8 + 1
    deadline = time.time() + 120  # the workflow was stopped: its job stops after its current step
    while "running" in (after := status(tmp_path, *config)).split("[harness]")[0]:
        assert time.time() < deadline, after
        time.sleep(1)
    assert "stopped" in after
    stopped = [p.parent for p in (tmp_path / "results" / "runs").glob("*/progress.json")]
    assert len(stopped) == 1 and (stopped[0] / "checkpoint.pt").exists()  # it kept its step


def fake_runs(study, scale="tiny") -> pd.DataFrame:
    cells = expand(study, scale, seeds=[0, 1])
    return pd.DataFrame(
        [{"signature": c.signature(s), "stage": s, "value": 40.0 + 5 * (i % 9) + c.seed}
         for i, c in enumerate(cells) for s in ("linprobe", "finetune") if s in c.stages(study.metrics)] +
        [{"signature": c.signature("pretrain"), "stage": "pretrain", "ratio": 0.95 if i == 2 else 0.6}
         for i, c in enumerate(cells) if "pretrain" in c.stages(study.metrics)])


def test_every_table_compiles_with_pdflatex(tmp_path):
    """Every table's LaTeX (two seeds, a control, a mark) inside a document: pdflatex, no error."""
    if shutil.which("pdflatex") is None:
        pytest.fail("pdflatex is not installed (Debian: texlive-latex-base texlive-latex-recommended)")
    results = Results(tmp_path / "results")
    names = available_studies()
    for name in names:
        study = load_study(name)
        render(study, "tiny", {}, fake_runs(study), results, seeds=[0, 1])
    tex = results.table("table3", "tex").read_text()
    assert r"\centering" in tex and r"\cmidrule" in tex and "Table 3:" not in tex
    assert r"$M{=}2$" in tex and r"$\pm$" in tex and r"$^\dagger$" in tex
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                   "\\begin{document}\n" + "".join(f"\\input{{{results.table(n, 'tex')}}}\n\\clearpage\n" for n in names)
                   + "\\end{document}\n")
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         env={**os.environ, "max_print_line": "10000"},  # a log line per message, not wrapped at 79
                         capture_output=True, text=True, timeout=300)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert out.returncode == 0 and "LaTeX Error" not in log and "Undefined control sequence" not in log, out.stdout[-3000:]
    overfull = {n: log.split(f"{n}.tex")[1].split(".tex")[0] for n in names if "Overfull \\hbox" in log.split(f"{n}.tex")[1].split(".tex")[0]}
    assert not overfull, f"tables wider than a landscape page: {sorted(overfull)}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "3", "-l", "3", str(tmp_path / "doc.pdf"),
                    str(SCREENSHOTS / "latex-table3")], check=True, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_ui(results: Path, cwd: Path):
    """`mlflow ui` as the README starts it, on a results folder, from another directory."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                             f"sqlite:///{results / 'mlflow.db'}", "--artifacts-destination", str(results / "mlartifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return proc, url
        except OSError:
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read().decode()[-2000:]
            time.sleep(0.5)


def browser(playwright):
    """Debian's headless Chromium, as root, on a closed network."""
    return playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])


@pytest.mark.integration
def test_a_copied_results_folder_browsed_in_chromium(tmp_path, table3_tiny):
    """results/ copied elsewhere, `mlflow ui` started there: in a real browser the runs table shows
    eleven distinct names, a pre-training run lists its children, a run page shows its seed,
    dataset and stage; the artifacts come from the copy."""
    from playwright.sync_api import sync_playwright

    workdir, _ = table3_tiny
    copy = tmp_path / "laptop" / "results"
    shutil.copytree(workdir / "results", copy)
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    proc, url = mlflow_ui(copy, elsewhere)
    try:
        experiment = json.load(urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?"
                                                      f"experiment_name=randsac-harness"))["experiment"]
        runs = json.load(urllib.request.urlopen(urllib.request.Request(
            f"{url}/api/2.0/mlflow/runs/search", data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"})))["runs"]
        names = {r["info"]["run_name"] for r in runs}
        assert len(runs) == 11 and len(names) == 11
        pretrain = next(r for r in runs if r["info"]["run_name"] == "M=2 · pretrain · s0 · table3")
        run_id = pretrain["info"]["run_id"]
        # the artifact is the copy's: change it there, the server returns the change
        artifact = copy / "mlartifacts" / pretrain["info"]["artifact_uri"].removeprefix("mlflow-artifacts:/") / "config.yaml"
        artifact.write_text(artifact.read_text() + "# read from the copy\n")
        served = urllib.request.urlopen(f"{url}/get-artifact?path=config.yaml&run_uuid={run_id}").read().decode()
        assert served.endswith("# read from the copy\n")

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            chromium = browser(playwright)
            page = chromium.new_page(viewport={"width": 1800, "height": 1100})
            # the README's link: MLflow 3 opens in its GenAI mode unless told it is model training
            page.goto(f"{url}/#/experiments/{experiment['experiment_id']}/runs?workflowType=machine_learning",
                      wait_until="load", timeout=120_000)
            page.get_by_text("M=2 · pretrain · s0 · table3").wait_for(timeout=120_000)
            assert page.get_by_text("Training runs", exact=True).count() == 0  # GenAI's title for this table
            assert page.get_by_text("Model registry", exact=True).count() == 1  # the model-training sidebar
            expanders = page.locator('button[data-component-id$="runnamecellrenderer.tsx_46"]')
            assert expanders.count() == 3  # the pre-training runs are parents
            for i in range(expanders.count()):
                expanders.nth(i).click()
            page.get_by_text("M=4 · finetune · s0 · table3").wait_for(timeout=60_000)
            shown = set(page.locator('a[href*="/runs/"] span').all_inner_texts())
            assert names <= shown  # every run, by a name that says what differs
            if page.get_by_role("button", name="Close").count():  # the assistant's side panel
                page.get_by_role("button", name="Close").first.click()
            # "Columns -> Tags", as the README says (the browser keeps the choice, not the server)
            page.get_by_role("button", name="Columns", exact=True).click()
            for tag in ("table", "cell", "stage", "seed"):  # the Tags group is the list's last
                page.locator(f'[class*="tree-node-content-wrapper"][title="{tag}"]').last.click()
            page.keyboard.press("Escape")
            for tag in ("table", "cell", "stage", "seed"):  # each a column of the runs table
                page.get_by_role("columnheader", name=tag, exact=True).first.wait_for(state="attached", timeout=60_000)
            assert "square M=4" in page.inner_text("body")  # a cell tag, in its column
            page.screenshot(path=str(SCREENSHOTS / "mlflow-runs-table.png"), full_page=True)

            page.goto(f"{url}/#/experiments/{experiment['experiment_id']}/runs/{run_id}", wait_until="load",
                      timeout=120_000)
            page.get_by_text("Child runs", exact=True).wait_for(timeout=120_000)
            page.get_by_text("M=2 · finetune · s0 · table3").wait_for(timeout=120_000)  # the children, loaded
            text = page.inner_text("body")
            for needed in ("seed", "dataset", "stage", "mnist5k", "M=2 · linprobe · s0 · table3",
                           "M=2 · finetune · s0 · table3", "The paper: LIN 81.38, FT 91.38", "harness.stages.pretrain"):
                assert needed in text, needed
            page.screenshot(path=str(SCREENSHOTS / "mlflow-run-page.png"), full_page=True)
            page.get_by_text("Artifacts", exact=True).click()
            page.get_by_text("reconstruction.png").wait_for(timeout=60_000)
            chromium.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
