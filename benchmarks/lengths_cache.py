"""`caretune check` then `caretune plan`, with and without the token-length cache, on real-length rows.

The input is --rows ChatMed rows: the real shard in ../shared/data/chatmed when present, else the shipped
sample, replicated with each copy's query made unique (a letters-only tag). It is converted with the
default settings, then each command runs in its own process (wall time and peak RSS). Order:
check --no-cache, plan --no-cache (before), check (fills the cache), plan (after check), plan again.

    python benchmarks/lengths_cache.py [--rows 100000] [--json OUT.json] [--before WORKTREE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
from convert_bench import SAMPLE, unique_tag, valid_rows  # noqa: E402

SHARED_SHARD = ROOT.parent / "shared" / "data" / "chatmed" / "corpus_92_hpc.jsonl"
STEPS = [
    ("check --no-cache", ["check", "--no-cache"]),
    ("plan --no-cache", ["plan", "RECIPE", "--no-cache"]),
    ("check (fills the cache)", ["check"]),
    ("plan after check", ["plan", "RECIPE"]),
    ("plan again", ["plan", "RECIPE"]),
]


def make_input(path: Path, rows: int) -> str:
    source = SHARED_SHARD if SHARED_SHARD.exists() else SAMPLE
    valid = valid_rows(source)
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            row = valid[i % len(valid)]
            query = row["query"] if i < len(valid) else f"{row['query']}（{unique_tag(i)}）"
            out.write(json.dumps({"query": query, "response": row["response"]}, ensure_ascii=False) + "\n")
    return str(source.relative_to(ROOT.parent))


def timed(command: list[str], cwd: Path, root: Path) -> dict:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "PYTHONPATH": str(root),
        "LLAMAFACTORY_VERBOSITY": "WARN",
    }
    code = (
        "import resource, runpy, sys, time; sys.argv = ['caretune'] + sys.argv[1:]; t = time.perf_counter()\n"
        "try:\n    runpy.run_module('caretune.cli', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
        "else:\n    code = 0\n"
        "peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))\n"
        "print('BENCH', time.perf_counter() - t, peak / 1024, code, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code, *command], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    line = [x for x in done.stderr.splitlines() if x.startswith("BENCH ")][-1].split()
    if line[3] not in ("0", "None"):
        raise SystemExit(f"caretune {' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return {"seconds": round(float(line[1]), 2), "peak_rss_mb": round(float(line[2]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", dest="json_out", default=None)
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also time check and plan of another checkout (e.g. a worktree of the commit before the cache)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        raw = work / "chatmed.jsonl"
        source = make_input(raw, args.rows)
        subprocess.run(
            [sys.executable, "-m", "caretune.cli", "convert", "chatmed", str(raw), "--no-card", "--no-progress"],
            cwd=work,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
            capture_output=True,
        )
        recipe = yaml.safe_load((ROOT / "recipes/qwen3-8b/lora_sft.yaml").read_text(encoding="utf-8"))
        recipe.update(dataset="multi-med", deepspeed=None)
        (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
        results = {"date": time.strftime("%Y-%m-%d"), "rows": args.rows, "source": source, "cores": os.cpu_count(), "steps": []}
        steps = [(label, command, ROOT) for label, command in STEPS]
        if args.before:
            steps = [
                (f"{label} ({args.before.name})", command, args.before.resolve())
                for label, command in (("check", ["check"]), ("plan", ["plan", "RECIPE"]))
            ] + steps
        for label, command, root in steps:
            figures = timed([part.replace("RECIPE", "recipe.yaml") for part in command], work, root)
            results["steps"].append({"step": label, **figures})
            print(f"{label:<30} {figures['seconds']:>8.1f} s {figures['peak_rss_mb']:>7} MB", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
