"""Conversion throughput and peak memory: caretune's streaming converter vs the walkthrough's approach.

The input is the shipped ChatMed sample replicated to --rows rows (each copy's query made unique
so dedupe keeps it). Each variant runs in its own process so its peak RSS is its own, twice: once timed
with nothing else running, once with its process tree's memory sampled (the sampler takes CPU of its own,
about a tenth of a core, which a variant using every core would otherwise lose to it).

    python benchmarks/convert_bench.py [--rows 492300] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "chatmed_consult_sample.jsonl"


def unique_tag(i: int) -> str:
    """A letters-only tag (no digits, so PII masking sees the sample's own share of numbers)."""
    letters = ""
    while True:
        i, r = divmod(i, 26)
        letters += chr(ord("a") + r)
        if i == 0:
            return letters


def valid_rows(source: Path) -> list[dict]:
    """The rows of a raw ChatMed JSON Lines file with a text query and response."""
    valid = []
    for line in source.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("query"), str) and isinstance(row.get("response"), str):
            valid.append(row)
    return valid


def make_input(path: Path, rows: int) -> None:
    """Replicate the sample's valid rows to `rows` rows of JSON Lines, queries made unique."""
    valid = valid_rows(SAMPLE)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            row = valid[i % len(valid)]
            out.write(
                json.dumps({"query": f"{row['query']}（{unique_tag(i)}）", "response": row["response"]}, ensure_ascii=False) + "\n"
            )


def walkthrough(raw: str, out: str) -> None:
    """The walkthrough's approach: read every row into memory, then one indented json.dump."""
    from caretune.constants import MEDICAL_SYSTEM_PROMPT

    records = []
    with open(raw, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            records.append({"instruction": MEDICAL_SYSTEM_PROMPT, "input": row["query"], "output": row["response"], "history": []})
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(records, handle, ensure_ascii=False, indent=2)


def caretune_convert(raw: str, out: str, workers: int | None = None, options=None) -> None:
    """caretune's converter with everything on: validation, PII masking, quality filters, care reminders,
    dedupe, split, report, rejects and changes logs, data-card collection; workers as `caretune convert` picks them."""
    from caretune.constants import DEFAULT_EVAL_SIZE, MAX_EVAL_FRACTION
    from converters import chatmed
    from converters.card import CardCollector
    from converters.options import HeldOut, Options, RunControls
    from converters.outputs import Outputs
    from converters.pipeline import convert_file

    outputs = Outputs.for_source(chatmed, out, Path(out).parent)
    convert_file(
        chatmed,
        raw,
        outputs,
        HeldOut(DEFAULT_EVAL_SIZE, MAX_EVAL_FRACTION),
        options=options or Options(),
        registry_path=str(Path(out).parent / "dataset_info.json"),
        controls=RunControls(progress=False, workers=workers),
        card=CardCollector(),
    )


def caretune_convert_1_process(raw: str, out: str) -> None:
    """The same with `--workers 1`: everything in one process."""
    caretune_convert(raw, out, workers=1)


def caretune_convert_unfiltered(raw: str, out: str) -> None:
    """The same as the previous release converted: `--filters none --care-reminder off`, no card."""
    from converters.options import Options

    caretune_convert(raw, out, workers=1, options=Options(filters=frozenset(), strip_wrappers=False, care_reminder="off"))


VARIANTS = {
    "walkthrough": walkthrough,
    "caretune": caretune_convert,
    "caretune-1-process": caretune_convert_1_process,
    "caretune-unfiltered": caretune_convert_unfiltered,
}


def run_variant(name: str, raw: str, out_dir: str, sample_memory: bool) -> dict:
    """Run one variant in a fresh process; return its seconds and its own peak RSS, and with `sample_memory`
    the peak RSS and PSS of its whole process tree (worker processes included), sampled every 50 ms."""
    import psutil

    code = (
        "import json, resource, sys, time; sys.path.insert(0, %r); sys.path.insert(0, %r)\n"
        "from convert_bench import VARIANTS\n"
        "t = time.perf_counter(); VARIANTS[%r](%r, %r); s = time.perf_counter() - t\n"
        "print(json.dumps({'seconds': s, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
    ) % (str(ROOT), str(Path(__file__).parent), name, raw, os.path.join(out_dir, name, "multi-med.json"))
    shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    os.makedirs(os.path.join(out_dir, name))  # one folder each, so no run dedupes against another
    os.sync()  # start with no other run's dirty pages still being written back
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tree_peak = tree_pss_peak = 0
    if sample_memory:
        process = psutil.Process(child.pid)
        while child.poll() is None:
            try:
                tree = [process, *process.children(recursive=True)]
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree))
                tree_pss_peak = max(tree_pss_peak, sum(p.memory_full_info().pss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)
    output, _ = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"{name} failed with exit code {child.returncode}")
    result = json.loads(output.strip().splitlines()[-1])
    if sample_memory:
        result["tree_peak_rss_mb"] = tree_peak / (1 << 20)
        result["tree_peak_pss_mb"] = tree_pss_peak / (1 << 20)
    return result


def measure(name: str, raw: str, out_dir: str) -> dict:
    """A variant's time from a run with nothing else running, its memory from a second, sampled run."""
    timed = run_variant(name, raw, out_dir, sample_memory=False)
    sampled = run_variant(name, raw, out_dir, sample_memory=True)
    return {
        "seconds": timed["seconds"],
        "peak_rss_mb": max(timed["peak_rss_mb"], sampled["peak_rss_mb"]),
        "tree_peak_rss_mb": sampled["tree_peak_rss_mb"],
        "tree_peak_pss_mb": sampled["tree_peak_pss_mb"],
        "sampled_run_seconds": sampled["seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=492_300)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    others = [name for name in VARIANTS if name != "walkthrough"]
    parser.add_argument("--variants", nargs="+", choices=others, help="run only these beside the walkthrough")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        raw = os.path.join(work, "chatmed.jsonl")
        make_input(Path(raw), args.rows)
        size_mb = os.path.getsize(raw) / 1e6
        results = {}
        for name in ["walkthrough", *(args.variants or others)]:
            results[name] = measure(name, raw, work)
    for result in results.values():
        result["rows_per_s"] = args.rows / result["seconds"]
    base = results["walkthrough"]["rows_per_s"]
    speedup = {name: r["rows_per_s"] / base for name, r in results.items() if name != "walkthrough"}
    if args.json:
        print(json.dumps({"rows": args.rows, "input_mb": size_mb, "results": results, "speedup": speedup}, indent=2))
        return
    print(f"input: {args.rows:,} rows, {size_mb:.0f} MB (ChatMed sample replicated)")
    for name, r in results.items():
        print(
            f"{name:<12} {r['seconds']:7.2f} s  {r['rows_per_s']:>10,.0f} rows/s  peak RSS {r['peak_rss_mb']:5.0f} MB"
            f" (process tree: RSS {r['tree_peak_rss_mb']:.0f} MB, PSS {r['tree_peak_pss_mb']:.0f} MB)"
        )
    for name, ratio in speedup.items():
        print(f"{name} / walkthrough rows/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
