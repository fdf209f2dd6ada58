"""`stefaland paper plan|run|status|render`, as a user types them.

The published numbers are checked against the paper's own text; the plan against the holdout
registry and the paper's compute table; a slice of the small plan runs for real (data synth, data
build, finetuning, reports as subprocesses), edited the way a user edits it (one fold, a smaller
world, an own model row, a row that fails), and is resumed, interrupted with Ctrl-C and rendered;
the `--k8s` path submits to the Kubernetes API double with the run folders on the S3 test server.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from stefaland.paper.availability import unavailable
from stefaland.paper.matrix import FOREIGN_SMALL
from stefaland.paper.plan import read_plan
from stefaland.paper.published import compute_rates, published, published_table, table_keys
from stefaland.paper.state import statuses
from stefaland.splits import get_holdout
from stefaland_cli.main import cli

from _guarded import REPO, clean_env, cli_subprocess
from _k8s_api_server import fake_api_server

NUMBER = re.compile(r"(?<![\w.])-?(?:\d[\d,]*\.\d+|\d{1,3}(?:,\d{3})+|\d+)(?![\w.])")


def _numbers(text: str) -> list[float]:
    """The numbers of a line of the paper's text; a 3-digit token starting 0 is an OCR-dropped point (051 = 0.51)."""
    values = []
    for token in NUMBER.findall(text):
        token = token.replace(",", "")
        values.append(float("0." + token[1:]) if re.fullmatch(r"0\d\d", token) else float(token))
    return values


def _table_lines(paper: list[str], caption: str) -> list[str]:
    start = next(i for i, line in enumerate(paper) if line.strip().startswith(caption))
    return paper[start + 1:start + 40]


# -- the published numbers -------------------------------------------------------------------------

def test_every_published_number_is_the_papers(shared_data: Path) -> None:
    paper = (shared_data.parent / "paper" / "stefaland-paper.txt").read_text().splitlines()
    checked = 0
    for key in table_keys():
        table = published_table(key)
        lines = _table_lines(paper, table.caption)
        for row in table.rows:
            line = next((ln for ln in lines if ln.strip().startswith(row["text"] + " ")), None)
            assert line is not None, f"table {key}: no line starting {row['text']!r} after {table.caption!r}"
            expected = [v for group in table.groups for v in row["values"][group]]
            assert _numbers(line.strip()[len(row["text"]):]) == expected, (key, row["row"], line)
            checked += len(expected)
        data_lines = [ln for ln in lines[:25] if len(_numbers(ln)) >= len(table.groups) * len(table.metrics)]
        assert len(data_lines) == len(table.rows), f"table {key}: the paper has rows the file lacks"
    compute = published()["compute"]
    lines = _table_lines(paper, compute["caption"])
    for row in compute["rows"]:
        line = next(ln for ln in lines if ln.startswith(row["text"] + " "))
        assert _numbers(line[len(row["text"]):])[:2] == [row["seconds_per_epoch"], row["gpus"]], line
    assert checked == 10 * 8 + 3 * 6 + 7 * 6 + 9 * 2 + 3 * 6


# -- the plan ----------------------------------------------------------------------------------------

def _plan(tmp_path: Path, *args: str, name: str = "plan.yaml") -> dict:
    result = CliRunner().invoke(cli, ["paper", "plan", *args, "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    return yaml.safe_load((tmp_path / name).read_text()) | {"_output": result.output}


def test_full_plan_runs_every_registered_fold_with_per_fold_encoders_and_gpu_hours(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "--tables", "1,F1", "--scale", "full")
    runs = {r["id"]: r for r in plan["runs"]}
    for scheme in ("pub", "pur"):
        folds = get_holdout("camels", scheme).fold_ids
        tuned = sorted(int(r["id"].rsplit(".", 1)[1]) for r in runs.values()
                       if r["id"].startswith(f"t1.stefaland-resconn.{scheme}.") and r["kind"] == "finetune")
        assert tuned == sorted(folds)
        for k in folds:  # each fold's encoder is pretrained without that fold, and comes first
            run = runs[f"t1.stefaland-resconn.{scheme}.{k}"]
            encoder = runs[f"pretrain.camels-{scheme}.{k}"]
            assert encoder["id"] in run["needs"]
            assert encoder["config"]["set"]["data.exclude"]["fold"] == k
            assert encoder["config"]["set"]["data.exclude"]["split"] == scheme
            assert run["config"]["set"]["model.pretrained"].endswith(f"camels-{scheme}/fold-{{fold}}")
        report = runs[f"t1.lstm-sl.{scheme}.report"]
        assert sorted(report["needs"]) == sorted(f"t1.lstm-sl.{scheme}.{k}" for k in folds)
        assert "LSTM-SL" not in {need.split(".")[1] for need in runs[f"t1.stefaland-resconn.{scheme}.1"]["needs"]}
    seconds, gpus = compute_rates()["lstm"]
    assert runs["t1.lstm-sl.pub.1"]["gpu_hours"] == pytest.approx(seconds * 25 * gpus / 3600)  # 25 epochs: the config
    seconds, gpus = compute_rates()["pretrain"]
    assert runs["pretrain.camels-pub.1"]["gpu_hours"] == pytest.approx(seconds * 20 * gpus / 3600)
    assert runs["tF1.linear-camels.pub.1"]["gpu_hours"] == 0  # scikit-learn: CPU
    assert "Table C8" in plan["_output"] and "GPU hours:" in plan["_output"]
    why = unavailable("terramind_resconn")
    terramind = runs["t1.terramind-resconn.pub.1"]
    assert terramind.get("unavailable") == why
    assert ("not available: " + why) in plan["_output"] if why else "not available" not in plan["_output"]


def test_small_plan_marks_what_cannot_run_here_not_available(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "--tables", "3", "--scale", "small")
    runs = {r["id"]: r for r in plan["runs"]}
    assert "no European site" in runs["t3.lstm-sl.europe.1"]["unavailable"]
    assert runs["t3.terramind-resconn.random.1"]["unavailable"] == FOREIGN_SMALL.format(model="terramind_resconn")
    assert "unavailable" not in runs["t3.lstm-sl.random.1"]
    assert runs["t3.stefaland-resconn.random.2"]["needs"][-1] == "pretrain.ismn-random.2"
    assert re.search(r"t3\.prithviwxc-resconn\.random\.1 .* not available: ", plan["_output"])
    again = CliRunner().invoke(cli, ["paper", "plan", "--out", str(tmp_path / "plan.yaml")])
    assert again.exit_code == 1 and "already exists; pass --force" in again.output
    mine = tmp_path / "notes.yaml"  # a file the tool did not write: never replaced, not even with --force
    mine.write_text("my: notes\n")
    refused = CliRunner().invoke(cli, ["paper", "plan", "--out", str(mine), "--force"])
    assert refused.exit_code == 1 and "not a StefaLand paper-plan output" in refused.output
    assert mine.read_text() == "my: notes\n"


# -- running a slice of the small plan locally -----------------------------------------------------

def _edit(path: Path, edit) -> None:
    document = yaml.safe_load(path.read_text())
    edit(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def _paper(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return cli_subprocess("paper", *args, env=clean_env(MPLBACKEND="Agg"), timeout=timeout)


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Table 1 at small scale, edited: PUB fold 1 only, a 40-site one-year world, the LSTM-SL and
    TerraMind rows of the paper, the user's own row and a row whose config fails; run once."""
    work = tmp_path_factory.mktemp("paper")
    path = work / "plan.yaml"
    CliRunner().invoke(cli, ["paper", "plan", "--tables", "1", "--scale", "small", "--out", str(path)])

    def edit(document: dict) -> None:
        document["folds"]["camels/pub"] = "1"
        table = document["tables"][0]
        table["groups"] = {"random": "pub"}
        keep = {"LSTM-SL", "TerraMind-resConn"}
        table["rows"] = [r for r in table["rows"] if r["row"] in keep] + [
            {"row": "My-LSTM", "model": "lstm", "set": {"model.hidden": 8, "model.label": "My-LSTM"}},
            {"row": "Broken", "model": "lstm", "set": {"train.batch_size": 0}}]
        synth = next(r for r in document["runs"] if r["id"] == "data.world-synth")
        synth["args"] = ["data", "synth", "{root}/data/world", "--sites", "40", "--years", "1", "--seed", "3",
                         "--quiet"]

    _edit(path, edit)
    result = _paper("run", str(path), "--local", "--max-parallel", "2")
    return {"plan": path, "work": work, "first": result, "root": work / "plan-outputs"}


def _events(output: str) -> list[tuple[str, str]]:
    return re.findall(r"^(start|done|FAILED)\s+(\S+?):?\s", output, flags=re.M)


def test_runs_in_dependency_order_and_reports_a_failure_with_its_log_while_others_go_on(ran: dict) -> None:
    first = ran["first"]
    assert first.returncode == 1, first.stdout + first.stderr  # one run failed
    plan = read_plan(ran["plan"])  # the runs as `paper run` read them: the edited rows expanded
    events = _events(first.stdout)
    finished_at = {run: i for i, (what, run) in enumerate(events) if what == "done"}
    started_at = {run: i for i, (what, run) in enumerate(events) if what == "start"}
    assert plan.runs["t1.my-lstm.pub.1"].needs == ["data.world-store"]
    for run, index in started_at.items():
        for need in plan.runs[run].needs:
            assert finished_at[need] < index, f"{run} started before {need} finished"
    assert {"t1.lstm-sl.pub.report", "t1.my-lstm.pub.report"} <= set(finished_at)
    assert "t1.terramind-resconn.pub.1" not in started_at  # not available: never run
    failed = re.search(r"FAILED  t1\.broken\.pub\.1: exit status 1 .*\n((?:\s+\| .*\n)+)", first.stdout)
    assert failed and "batch_size" in failed.group(1), first.stdout  # the log's last lines, the error among them
    status = _paper("status", str(ran["plan"]))
    assert re.search(r"t1\.broken\.pub\.1 .* failed: exit status 1", status.stdout)
    assert re.search(r"t1\.lstm-sl\.pub\.1 .* finished", status.stdout)
    assert "batch_size" in status.stdout


def test_the_edited_plan_is_honoured(ran: dict) -> None:
    from stefaland.store import open_store

    root = ran["root"]
    assert open_store(str(root / "data" / "world.zarr")).sizes["site"] == 40  # the edited synth run
    assert not (root / "runs" / "t1" / "lstm-sl" / "pub" / "fold-2").exists()  # folds: 1
    config = yaml.safe_load((root / "runs" / "t1" / "my-lstm" / "pub" / "fold-1" / "config.yaml").read_text())
    assert config["model"]["hidden"] == 8
    summary = (root / "reports" / "t1" / "my-lstm" / "pub" / "camels_summary.csv").read_text()
    assert "My-LSTM" in summary


def test_a_resumed_run_skips_finished_runs(ran: dict) -> None:
    fold = ran["root"] / "runs" / "t1" / "lstm-sl" / "pub" / "fold-1"
    before = (fold / "manifest.json").stat().st_mtime_ns
    again = _paper("run", str(ran["plan"]), "--local")
    started = [run for what, run in _events(again.stdout) if what == "start"]
    assert started == ["t1.broken.pub.1"], again.stdout  # only the failed run is tried again
    assert re.search(r"(\d+) finished already \(skipped\)", again.stdout)
    assert (fold / "manifest.json").stat().st_mtime_ns == before


def test_render_shows_every_paper_row_in_order_and_missing_rows_as_missing(ran: dict) -> None:
    result = _paper("render", str(ran["plan"]), "--out", str(ran["work"] / "tables"))
    assert result.returncode == 0, result.stderr
    text = (ran["work"] / "tables" / "table-1.md").read_text()
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == published_table("1").row_names() + ["My-LSTM", "Broken"]
    line = {r.split("|")[1].strip(): r for r in text.splitlines() if r.startswith("| ")}
    assert re.search(r"\| 1\.402 / \d\.\d{3} \([+-]\d\.\d{3}\) \|", line["LSTM-SL"])
    assert "not available" in line["TerraMind-resConn"]
    assert "missing: not in the plan" in line["StefaLand-resConn"]
    assert "failed" in line["Broken"] and "| — / — |" in line["Broken"].replace("—  ", "— ")
    csv = (ran["work"] / "tables" / "table-1.csv").read_text().splitlines()
    assert csv[0] == "table,row,group,scheme,metric,paper,ours,difference,status"
    assert len(csv) - 1 == 12 * 2 * 4  # 12 rows x 2 column groups x 4 metrics
    assert (ran["work"] / "tables" / "table-1.png").read_bytes()[:4] == b"\x89PNG"
    again = _paper("render", str(ran["plan"]), "--out", str(ran["work"] / "tables"))
    assert again.returncode == 0, again.stderr  # its own earlier rendering is replaced
    theirs = ran["work"] / "my-folder"
    theirs.mkdir()
    (theirs / "table-1.md").write_text("mine")
    refused = _paper("render", str(ran["plan"]), "--out", str(theirs))
    assert refused.returncode == 1 and "not a StefaLand paper-tables output" in refused.stderr
    assert (theirs / "table-1.md").read_text() == "mine"


def test_ctrl_c_stops_cleanly_and_nothing_half_written_counts_as_finished(ran: dict) -> None:
    import shutil

    shutil.rmtree(ran["root"] / "runs" / "t1" / "my-lstm")
    shutil.rmtree(ran["root"] / "reports" / "t1" / "my-lstm")
    process = subprocess.Popen([sys.executable, "-m", "stefaland_cli.main", "paper", "run", str(ran["plan"]),
                                "--runs", "t1.my-lstm.*"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env=clean_env(MPLBACKEND="Agg", PYTHONUNBUFFERED="1"), cwd=REPO)
    assert process.stdout is not None
    lines = []
    for line in process.stdout:  # until the finetuning command has started
        lines.append(line)
        if line.startswith("start   t1.my-lstm.pub.1"):
            break
    time.sleep(2.0)  # the finetuning command is starting up or training
    process.send_signal(signal.SIGINT)
    output = "".join(lines) + process.communicate(timeout=60)[0]
    assert process.returncode == 130, output
    assert "interrupted: stopping 1 running run(s) (t1.my-lstm.pub.1)" in output
    assert not (ran["root"] / "runs" / "t1" / "my-lstm" / "pub" / "fold-1" / "manifest.json").exists()
    assert statuses(read_plan(ran["plan"]))["t1.my-lstm.pub.1"] == "ready"  # not finished, not failed
    again = _paper("run", str(ran["plan"]), "--runs", "t1.my-lstm.*")
    assert again.returncode == 0, again.stdout
    assert "done    t1.my-lstm.pub.report" in again.stdout


# -- Kubernetes ------------------------------------------------------------------------------------

def _play_controller(server, s3, stop: threading.Event, fail: set[str], events: list) -> None:
    """The Job controller and the pods: a Job's pod writes its run's record and manifest and the Job
    completes; a Job of a run in ``fail`` fails (its pods used up the backoff limit)."""
    fs = s3
    seen: set[str] = set()
    while not stop.is_set():
        with server.cluster.lock:
            jobs = [dict(j) for j in server.cluster.items("jobs", "stefaland")]
        for job in jobs:
            name = job["metadata"]["name"]
            if name in seen or not job.get("status", {}).get("active"):
                continue
            seen.add(name)
            annotations = job["metadata"]["annotations"]
            out = annotations["stefaland.io/out"].removeprefix("s3://")
            fold = job["metadata"]["labels"].get("stefaland.io/fold")
            folder = f"{out}/fold-{fold}" if fold else out
            events.append(("created", folder, time.monotonic(), job["spec"].get("backoffLimit")))
            if any(folder.endswith(f) for f in fail):
                server.cluster.set_job_condition("stefaland", name, "Failed")
                continue
            record = b'{"fake": "pod"}'
            fs.pipe(f"{folder}/run.json", record)
            manifest = {"version": 1, "files": [{"path": "run.json", "size": len(record), "sha256": ""}]}
            fs.pipe(f"{folder}/manifest.json", json.dumps(manifest).encode())
            events.append(("complete", folder, time.monotonic(), None))
            server.cluster.set_job_condition("stefaland", name, "Complete")
        stop.wait(0.05)


SELECTED = "pretrain.camels-pub.*,t1.stefaland-resconn.pub.[0-9]"


def test_k8s_submits_in_dependency_order_never_twice_and_does_not_retry_a_failed_job(
        tmp_path: Path, s3_bucket: str, s3_env, monkeypatch: pytest.MonkeyPatch) -> None:
    import s3fs

    path = tmp_path / "plan.yaml"
    CliRunner().invoke(cli, ["paper", "plan", "--tables", "1", "--scale", "small", "--out", str(path),
                             "--root", f"{s3_bucket}/paper"])

    def edit(document: dict) -> None:  # the encoders and resConn finetunes only, the store taken as given
        document["tables"][0]["rows"] = [r for r in document["tables"][0]["rows"] if r["row"] == "StefaLand-resConn"]
        document["tables"][0]["groups"] = {"random": "pub"}
        document["kubernetes"] = {"image": "stefaland:test", "gpus": {"pretrain": 1, "finetune": 1},
                                  "backoff_limit": 2, "poll_seconds": 0.1}
        for run in document["runs"]:
            if run["id"].startswith(("pretrain.camels-pub.", "t1.stefaland-resconn.pub.")):
                run["needs"] = [n for n in run.get("needs", []) if not n.startswith("data.")]

    _edit(path, edit)
    fs = s3fs.S3FileSystem(endpoint_url=s3_env.endpoint, key=s3_env.access_key, secret=s3_env.secret_key,
                           skip_instance_cache=True)
    with fake_api_server() as server:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(server.kubeconfig(namespace="stefaland"))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        stop, events = threading.Event(), []
        controller = threading.Thread(target=_play_controller, args=(server, fs, stop, {"camels-pub/fold-2"}, events))
        controller.start()
        try:
            first = CliRunner().invoke(cli, ["paper", "run", str(path), "--k8s", "--max-parallel", "4",
                                             "--runs", SELECTED])
            again = CliRunner().invoke(cli, ["paper", "run", str(path), "--k8s",
                                             "--runs", SELECTED])
        finally:
            stop.set()
            controller.join()
    created = [e for e in events if e[0] == "created"]
    assert first.exit_code == 1, first.output
    assert "FAILED  pretrain.camels-pub.2" in first.output and "backoffLimit 2" in first.output
    complete = {folder: at for what, folder, at, _ in events if what == "complete"}
    encoder_1 = next(f for f in complete if f.endswith("encoders/camels-pub/fold-1"))
    tuned_1 = next(at for _, folder, at, _ in created if folder.endswith("runs/t1/stefaland-resconn/pub/fold-1"))
    assert complete[encoder_1] < tuned_1  # the finetune Job only once its encoder is finished
    assert not any(folder.endswith("stefaland-resconn/pub/fold-2") for _, folder, _, _ in created)  # its encoder failed
    assert [e[3] for e in created] == [2] * len(created)  # every Job carries the plan's backoff limit
    assert len(created) == 3, (created, first.output, again.output)  # 2 encoders + 1 finetune; the resumed run submitted nothing
    # resumed: the finished encoder and finetune skipped, the failed Job not submitted again (its
    # backoff limit is spent), its finetune still waiting on it
    assert again.exit_code == 1 and "4 runs: 2 finished already" in again.output
    assert "1 failed, 1 skipped" in again.output
    assert "start" not in again.output.replace("started", "")
