"""A conversion killed mid-write leaves the previous outputs and registry exactly as they were."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import CHATMED_SAMPLE, ROOT, read_json


def workers_of(raw) -> list[int]:
    """Live processes converting `raw` (the conversion and its workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(raw).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_kill_during_write_keeps_previous_outputs(project):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "caretune.cli"]
    subprocess.run([*cli, "convert", "chatmed", str(CHATMED_SAMPLE)], cwd=project, env=env, check=True, capture_output=True)
    before = {p.name: p.read_bytes() for p in (project / "data").iterdir() if not p.name.startswith(".")}
    registry = (project / "dataset_info.json").read_bytes()

    rows = [line for line in CHATMED_SAMPLE.read_text(encoding="utf-8").splitlines() if line.startswith('{"query"')]
    big = project / "big.jsonl"
    with open(big, "w", encoding="utf-8") as out:
        for i in range(300_000):  # unique queries, long enough to be caught mid-write
            row = rows[i % len(rows)]
            out.write(row.replace('{"query": "', f'{{"query": "#{i} ', 1) + "\n")

    process = subprocess.Popen(
        [*cli, "convert", "chatmed", str(big)], cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    temp = []
    while time.monotonic() < deadline and process.poll() is None:
        temp = [p for p in (project / "data").glob(".multi-med.json.*.tmp")]
        if temp and temp[0].stat().st_size > 1 << 20:  # well into writing the new train file
            break
        time.sleep(0.02)
    assert process.poll() is None, "conversion finished before it could be interrupted"
    assert temp, "no temp file seen"
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and workers_of(big):
        time.sleep(0.1)
    assert workers_of(big) == [], "the killed conversion's worker processes are still running"

    after = {p.name: p.read_bytes() for p in (project / "data").iterdir() if not p.name.startswith(".")}
    assert after == before
    assert (project / "dataset_info.json").read_bytes() == registry
    assert len(read_json(project / "data" / "multi-med.json")) == 61
