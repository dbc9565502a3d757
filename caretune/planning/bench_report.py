"""`caretune bench`'s report: each variant's loss against the baseline's, the results file and the Markdown table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from caretune.planning import estimate

LOSS_TOLERANCE_SHARE = 0.02  # the least difference in mean loss called a mismatch: 2% of the baseline's
LOSS_NOISE_SIGMAS = 3.0  # or this many standard errors of the difference, when larger


def compare_losses(report: dict) -> None:
    """Each measured variant's mean loss over its timed steps against the first measured variant's (the
    baseline), within noise: max(LOSS_NOISE_SIGMAS standard errors of the difference, LOSS_TOLERANCE_SHARE of
    the baseline's mean). Sets `loss_check` on each, `baseline` and `fastest_matching` on the report."""
    warmup = report["warmup"]
    ran = [v for v in report["variants"] if "real_tokens_per_s" in v and len(v["losses"]) > warmup]
    if not ran:
        return
    baseline = ran[0]

    def mean_and_variance(losses: list[float]) -> tuple[float, float]:
        timed = losses[warmup:]
        mean = sum(timed) / len(timed)
        variance = sum((x - mean) ** 2 for x in timed) / max(1, len(timed) - 1) / len(timed)
        return mean, variance  # the variance of the mean

    base_mean, base_variance = mean_and_variance(baseline["losses"])
    for variant in ran:
        mean, variance = mean_and_variance(variant["losses"])
        tolerance = max(LOSS_NOISE_SIGMAS * math.sqrt(base_variance + variance), LOSS_TOLERANCE_SHARE * abs(base_mean))
        variant["loss_check"] = {
            "baseline": baseline["name"],
            "mean_loss": round(mean, 4),
            "baseline_mean_loss": round(base_mean, 4),
            "difference": round(mean - base_mean, 4),
            "tolerance": round(tolerance, 4),
            "matches": bool(variant["finite"]) and abs(mean - base_mean) <= tolerance,
        }
    report["baseline"] = baseline["name"]
    matching = [v for v in ran if v["loss_check"]["matches"]]
    report["fastest_matching"] = max(matching, key=lambda v: v["real_tokens_per_s"])["name"] if matching else None


def write_results(report: dict, path: Path) -> None:
    """The results so far as JSON (rewritten after every variant, so they survive an interruption)."""
    from caretune.basics.files import AtomicFile

    with AtomicFile(path) as handle:
        handle.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        handle.commit()


def append_table(table: str, path: Path) -> None:
    """Append a results table to a Markdown file."""
    from caretune.basics.files import AtomicFile

    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    with AtomicFile(path) as handle:
        handle.write(previous.rstrip("\n") + "\n\n" + table + "\n")
        handle.commit()


def format_report(report: dict) -> str:
    """A Markdown table of the variants, and which is the fastest whose loss matches the baseline's."""
    lines = [
        f"{report['date']} · {report['device']} · {report['model']} ({report['params'] / 1e9:.2f}B, random "
        f"weights) · LoRA r8 all linear · cutoff {report['cutoff_len']} · padding batch {report['micro_batch']}, "
        f"packing batch {report['pack_batch']} · {report['warmup']} warm-up + {report['steps']} timed steps · "
        f"lengths: {report['profile']}",
        "",
        "| variant | per step | timed steps | real tokens/s | processed tokens/s | non-padding | MFU / HFU | peak memory "
        "| losses | mean loss vs baseline |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for v in report["variants"]:
        shape = f"{v['batch']} x {v['cutoff_len']}" if "batch" in v else ""
        if "skipped" in v or "error" in v:
            outcome = "skipped: " + v["skipped"] if "skipped" in v else "failed: " + v["error"]
            lines.append(f"| {v['name']} | {shape} | {outcome} | | | | | | | |")
            continue
        memory = v["peak_memory_bytes"] or v["peak_rss_bytes"]
        where = "GPU" if v["peak_memory_bytes"] else "RSS"
        if v["peak_memory_bytes"] and v.get("modelled_peak_bytes"):
            where += f" (model: {v['modelled_peak_bytes'] / estimate.GIB:.1f})"
        mfu = f"{v['mfu']:.1%} / {v['hfu']:.1%}" if v["mfu"] is not None else "n/a (CPU)"
        losses = ", ".join(f"{x:.2f}" for x in v["losses"][-3:])
        check = v.get("loss_check")
        versus = (
            f"{check['mean_loss']:.3f} ({check['difference']:+.3f}, within ±{check['tolerance']:.3f}: "
            f"{'yes' if check['matches'] else 'NO'})"
            if check
            else ""
        )
        lines.append(
            f"| {v['name']} | {shape} | {v['timed_steps']} | {v['real_tokens_per_s']:,.0f} | "
            f"{v['processed_tokens_per_s']:,.0f} | {v['non_padding_share']:.1%} | {mfu} | "
            f"{memory / estimate.GIB:.1f} GiB {where} | {losses} | {versus} |"
        )
    if report.get("baseline"):
        lines += ["", f"Baseline: {report['baseline']}; fastest whose mean loss matches it: {report['fastest_matching']}."]
    return "\n".join(lines)
