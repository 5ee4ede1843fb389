"""Reading the results as a researcher does: the MLflow UI in a real browser on a copied results
folder (the status of a running table: test_status.py; LaTeX that compiles: report/test_tables.py)."""
import json
import shutil
import urllib.request

import pytest
from conftest import need_reader


def browser(playwright):
    """Debian's headless Chromium, as root, on a closed network."""
    return playwright.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=[
        "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"])


@pytest.mark.integration
def test_a_copied_results_folder_browsed_in_chromium(tmp_path, table3_tiny, start_mlflow):
    """results/ copied elsewhere, `mlflow ui` started there: in a real browser the runs table shows
    eleven distinct names, a pre-training run lists its children, a run page shows its seed,
    dataset and stage; the artifacts come from the copy."""
    from playwright.sync_api import sync_playwright

    need_reader("chromium")
    workdir, _ = table3_tiny
    copy = tmp_path / "laptop" / "results"
    shutil.copytree(workdir / "results", copy)
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    url = start_mlflow("ui", copy / "mlflow.db", copy / "mlartifacts", cwd=elsewhere)  # as the README starts it
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

    screenshots = tmp_path / "screenshots"  # for a person to look at
    screenshots.mkdir()
    print(f"screenshots of the MLflow UI: {screenshots}")
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
        page.screenshot(path=str(screenshots / "mlflow-runs-table.png"), full_page=True)

        page.goto(f"{url}/#/experiments/{experiment['experiment_id']}/runs/{run_id}", wait_until="load",
                  timeout=120_000)
        page.get_by_text("Child runs", exact=True).wait_for(timeout=120_000)
        page.get_by_text("M=2 · finetune · s0 · table3").wait_for(timeout=120_000)  # the children, loaded
        text = page.inner_text("body")
        for needed in ("seed", "dataset", "stage", "mnist5k", "M=2 · linprobe · s0 · table3",
                       "M=2 · finetune · s0 · table3", "The paper: LIN 81.38, FT 91.38", "harness.stages.pretrain"):
            assert needed in text, needed
        page.screenshot(path=str(screenshots / "mlflow-run-page.png"), full_page=True)
        page.get_by_text("Artifacts", exact=True).click()
        page.get_by_text("reconstruction.png").wait_for(timeout=60_000)
        chromium.close()
