"""Concurrent conversions: one output set always comes from one run, every registration survives, and
temporary files left by a killed run are swept by the next one (never a live run's)."""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import CHATMED_SAMPLE, ROOT

ROUNDS = 12


pytestmark = pytest.mark.slow


def big_chatmed(path: Path, copies: int, tag: str) -> Path:
    """The sample's valid rows repeated with unique questions: a run long enough for races to overlap."""
    rows = []
    for line in CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("query"), str) and isinstance(row.get("response"), str):
            rows.append(row)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(copies):
            for row in rows:
                out.write(
                    json.dumps({"query": f"{row['query']}（{tag}{i}）", "response": row["response"]}, ensure_ascii=False) + "\n"
                )
    return path


def source_tag(row: dict) -> str:
    """Which input a converted row came from: the letter big_chatmed put in its question."""
    return row["instruction"].rsplit("（", 1)[1][0]


def test_concurrent_conversions_into_one_output_set_stay_consistent(tmp_path):
    inputs = [str(big_chatmed(tmp_path / f"raw{i}.jsonl", 400, tag)) for i, tag in enumerate("AB")]
    out = tmp_path / "data" / "m.json"
    out.parent.mkdir()
    for _ in range(ROUNDS):
        jobs = [(inputs[i % 2], str(out), None, size) for i, size in enumerate((50, 120, 300, 400))]
        with ProcessPoolExecutor(4) as pool:
            list(pool.map(_convert_report, *zip(*jobs)))
        report = json.loads((tmp_path / "data" / "m.report.json").read_text(encoding="utf-8"))
        train = json.loads(out.read_text(encoding="utf-8"))
        held_out = json.loads((tmp_path / "data" / "m-eval.json").read_text(encoding="utf-8"))
        assert (len(train), len(held_out)) == (report["written"], report["eval"]), "the report is another run's"
        tags = {source_tag(row) for row in train + held_out}
        assert len(tags) == 1, f"train and eval come from different inputs: {tags}"
        assert not {r["instruction"] for r in train} & {r["instruction"] for r in held_out}


def _convert_report(raw, out, registry, eval_size):
    from converters import chatmed
    from converters.options import HeldOut
    from converters.outputs import Outputs
    from converters.pipeline import convert_file

    convert_file(chatmed, raw, Outputs.for_source(chatmed, out, Path(out).parent), HeldOut(eval_size, 0.1), registry_path=registry)


def test_concurrent_registrations_are_all_kept(tmp_path):
    registry = tmp_path / "dataset_info.json"
    (tmp_path / "data").mkdir()
    for round_no in range(ROUNDS):
        names = [f"set{round_no}x{i}" for i in range(4)]
        # each its own rows: a conversion dedupes against the datasets already in its folder
        raws = [str(big_chatmed(tmp_path / f"{name}.jsonl", 40, name)) for name in names]
        jobs = [(raw, str(tmp_path / "data" / f"{name}.json"), str(registry), 5) for raw, name in zip(raws, names)]
        with ProcessPoolExecutor(4) as pool:
            list(pool.map(_convert_report, *zip(*jobs)))
        entries = json.loads(registry.read_text(encoding="utf-8"))
        for name in names:
            assert name in entries and f"{name}-eval" in entries, (name, sorted(entries))


def convert_command(raw, out) -> list[str]:
    """`caretune convert chatmed RAW --out OUT` without registry or card, as a subprocess command."""
    return [sys.executable, "-m", "caretune.cli", "convert", "chatmed", str(raw), "--out", str(out), "--no-register", "--no-card"]


def test_a_killed_runs_temporary_files_are_swept_by_the_next_run(tmp_path):
    raw = big_chatmed(tmp_path / "raw.jsonl", 400, "D")
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = convert_command(raw, data / "k.json")
    for _ in range(3):
        victim = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not list(data.glob(".k*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    assert list(data.glob(".k*.tmp")), "the killed runs left no temporary files to sweep"
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert not list(data.glob(".*.tmp")), sorted(p.name for p in data.iterdir())
    assert "removed" in done.stderr and "left by an interrupted run" in done.stderr


def test_a_second_conversion_waits_for_the_lock_or_times_out_clearly(tmp_path):
    from caretune.basics.files import exclusive, lock_path

    data = tmp_path / "data"
    command = convert_command(CHATMED_SAMPLE, data / "w.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with exclusive(data / "w.json", what="a test holding it"):
        timed_out = subprocess.run(
            [*command, "--lock-timeout", "1"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
        )
        assert timed_out.returncode == 1 and "Traceback" not in timed_out.stderr
        assert f"{lock_path(data / 'w.json')}: another run still holds it after 1 s" in timed_out.stderr
        assert not (data / "w.json").exists()
        waiting = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None  # still waiting while the lock is held
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    assert "waiting for another run that holds" in err and (data / "w.json").exists()
