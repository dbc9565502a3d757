"""`caretune prefs build`: preference pairs from the SFT model's own answers (on-policy), judged in both orders.

For each prompt, K answers are sampled from the recipe's model (base + SFT adapter); every two of them are judged
by the pairwise grader in both orders (K(K-1) calls a prompt). A pair counts only when one answer wins both orders;
a prompt gives one row: its candidate with the most such wins as chosen, and, among the answers it beat, the one
that lost most as rejected. The rows are LLaMA-Factory ranking records (converters/prefs.py), fitted to the recipe's
cutoff by whole prompt turns as converted pairs are, and registered under the recipe's dataset name.

Prompts come from a registered set kept out of SFT (by default the prompts of `caretune convert prefs`'s set, which
that conversion dedupes against every SFT set and held-out split). Prompts of any held-out split are never used;
prompts an SFT set trains on are allowed but counted, with their tie rate apart: answers to them come out
near-memorised and tie more often.

The sampled answers are kept beside the output (`*.candidates.jsonl`) with the settings that made them; a rerun
with the same model, adapter and settings reuses them, so its judge calls all come from the verdict cache.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.basics.files import AtomicFile, write_json_atomic
from caretune.basics.registry import register
from caretune.constants import DATASET_INFO, MEDICAL_PREFS_DATASET, TEMPLATE
from caretune.evaluation.grader_prompts import DEFAULT_LANGUAGE
from caretune.evaluation.judge import Judge
from caretune.evaluation.pairwise import pair_call, question_id
from caretune.generation.think_blocks import strip_think
from caretune.recipe import Recipe, names_in

DEFAULT_CANDIDATES = 4
DEFAULT_TEMPERATURE = 0.8
DEFAULT_SEED = 42
CHOSEN, REJECTED = "chosen", "rejected"


@dataclass(frozen=True)
class Sampling:
    """How the candidates are drawn: what a rerun must match to reuse them."""

    prompts: str  # the registered dataset the prompts come from
    sample: int | None  # prompts drawn (by hash of the question), None: all
    candidates: int
    temperature: float
    max_new_tokens: int
    seed: int


def judge_calls(prompts: int, candidates: int) -> int:
    """Judge calls for `prompts` prompts of `candidates` answers each: every pair, in both orders."""
    return prompts * candidates * (candidates - 1)


def verdict_of(first: str | None, second: str | None) -> str:
    """One pair's verdict from its two orders (i shown first, then j shown first): "i" or "j" when one answer wins
    both; "tie" when both say tie or one does; "inconsistent" when each order names a different answer (position
    bias); "unparsed" when either verdict is missing."""
    if first is None or second is None:
        return "unparsed"
    one = {"A": "i", "B": "j", "tie": "tie"}[first]
    two = {"A": "j", "B": "i", "tie": "tie"}[second]
    if one == two:
        return one
    return "tie" if "tie" in (one, two) else "inconsistent"


def pick_pair(answers: list[str], wins: dict[tuple[int, int], str]) -> tuple[int, int] | None:
    """(chosen, rejected) indices from the decisive verdicts of one prompt (`wins[(i, j)]` is "i" or "j"), or None
    when no pair was decisive: the answer with the most wins, and among those it beat, the one with most losses."""
    beat: dict[int, set[int]] = {index: set() for index in range(len(answers))}
    for (i, j), winner in wins.items():
        if winner == "i":
            beat[i].add(j)
        elif winner == "j":
            beat[j].add(i)
    losses = Counter(loser for losers in beat.values() for loser in losers)
    best = max(beat, key=lambda index: (len(beat[index]), -losses[index], -index))
    if not beat[best]:
        return None
    return best, max(beat[best], key=lambda index: (losses[index], -index))


def _keys_of(messages: list[dict]) -> set[int]:
    """The dedupe keys a prompt may be known by: its opening question's (SFT sets) and the whole prompt's (pairs)."""
    from converters.records import query_key

    return {query_key(messages[0]["content"]), query_key("\n".join(message["content"] for message in messages))}


def split_keys(dataset_dir: Path) -> tuple[set[int], set[int]]:
    """(held-out keys, SFT-trained keys) of every conversion whose report lies in the registry's data folders."""
    from converters.outputs import earlier_reports
    from converters.reader import RawFile
    from converters.records import query_key
    from converters.sources import SOURCES

    held_out, trained = set(), set()
    folders = {dataset_dir / "data", dataset_dir}
    for folder in folders:
        for _, report in earlier_reports(folder):
            source = SOURCES[report["source"]]
            for key, target in (("eval", held_out), ("train", None if getattr(source, "PREFERENCE", False) else trained)):
                path = Path(report["outputs"][key])
                path = path if path.is_absolute() else dataset_dir / path
                if target is None or not path.is_file():
                    continue
                for _, record in RawFile(path).rows():
                    target.add(query_key(source.first_query(record)))
    return held_out, trained


def _settings_digest(recipe: Recipe, sampling: Sampling) -> str:
    """What made the candidates: the model, the adapter files, the template and the sampling settings."""
    digest = hashlib.sha256()
    keys = {key: recipe.args.get(key) for key in ("model_name_or_path", "adapter_name_or_path", "template", "enable_thinking")}
    digest.update(json.dumps({**keys, **asdict(sampling)}, sort_keys=True).encode())
    for adapter in names_in(recipe.adapter):
        for path in sorted(Path(adapter).glob("adapter_model.*")):
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _load_candidates(path: Path, digest: str) -> dict[str, list[str]] | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header, rows = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    except (ValueError, IndexError):
        return None
    if header.get("settings") != digest:
        return None
    return {row["question_id"]: row["answers"] for row in rows}


def _save_candidates(path: Path, digest: str, candidates: dict[str, list[str]]) -> None:
    with AtomicFile(path) as out:
        out.write(json.dumps({"settings": digest}) + "\n")
        for key, answers in candidates.items():
            out.write(json.dumps({"question_id": key, "answers": answers}, ensure_ascii=False) + "\n")
        out.commit()


def build_pairs(
    recipe_path: str,
    judge: Judge,
    sampling: Sampling,
    *,
    backend: str = "huggingface",
    language: str = DEFAULT_LANGUAGE,
    log=print,
) -> dict:
    """Sample, judge, pick and write the on-policy set named by the recipe's `dataset`; returns its report."""
    from caretune.basics.registry import load_registry
    from caretune.training.recipe_checks import check_model_paths
    from converters.prefs import encode, registry_entry

    recipe = Recipe.load(recipe_path)
    check_model_paths(recipe.path, recipe.args)
    if not recipe.adapter:
        raise UserError(
            f"{recipe.path}: no adapter_name_or_path; on-policy pairs are sampled from the SFT model (dpo.yaml names it)"
        )
    if sampling.candidates < 2:
        raise UserError("--candidates must be at least 2: a pair needs two answers")
    name = (recipe.datasets or [None])[0]
    if not name:
        raise UserError(f"{recipe.path}: no dataset to write the pairs as (dpo.yaml names prefs-onpolicy)")
    dataset_dir = recipe.dataset_dir
    registry_path = dataset_dir / DATASET_INFO
    registry = load_registry(registry_path)
    if sampling.prompts not in registry:
        raise UserError(
            f"{registry_path}: no dataset {sampling.prompts!r} to take prompts from; convert a preference set first "
            f"(caretune convert prefs FILE registers {MEDICAL_PREFS_DATASET}) or name one with --prompts"
        )
    rows, skipped = _prompt_rows(recipe, sampling)
    log(
        f"prefs: {len(rows)} prompts x {sampling.candidates} answers; the judge is asked "
        f"{judge_calls(len(rows), sampling.candidates)} times (each pair in both orders; cached verdicts are not asked again)"
    )

    out = dataset_dir / str(registry.get(name, {}).get("file_name") or f"data/{name}.json")
    candidates_path = out.with_name(f"{name}.candidates.jsonl")
    digest = _settings_digest(recipe, sampling)
    ids = [question_id(messages) for messages, _, _ in rows]
    candidates = _answers(recipe, sampling, rows, ids, candidates_path, digest, backend, log)
    outcomes = _outcomes(judge, rows, ids, candidates, language)
    records, lengths, by_seen = _picked(recipe, rows, ids, candidates, outcomes, skipped)
    if not records:
        raise UserError(f"no prompt gave a decisive pair ({dict(skipped)}); nothing was written")
    with AtomicFile(out) as handle:
        handle.write_bytes(b"[\n" + b",\n".join(encode(record) for record in records) + b"\n]\n")
        handle.commit()
    changed = register(registry_path, {name: {"file_name": Path(out).relative_to(dataset_dir).as_posix(), **registry_entry()}})
    report = _report(recipe, name, out, sampling, rows, outcomes, by_seen, lengths, skipped, judge, changed)
    write_json_atomic(out.with_name(f"{name}.build.json"), report)
    return report


def _prompt_rows(recipe: Recipe, sampling: Sampling) -> tuple[list, Counter]:
    """(messages, system, trained on) of each prompt to sample, held-out prompts skipped and counted."""
    from caretune.evaluation.evaluate import dataset_rows

    dataset_dir = recipe.dataset_dir
    held_out, trained = split_keys(dataset_dir)
    rows, skipped = [], Counter()
    for messages, _, system in dataset_rows(recipe.args, sampling.prompts):
        keys = _keys_of(messages)
        if keys & held_out:
            skipped["held_out_prompt"] += 1
            continue
        rows.append((messages, system, bool(keys & trained)))
    if sampling.sample is not None:
        rows = sorted(rows, key=lambda row: question_id(row[0]))[: sampling.sample]
    if not rows:
        raise UserError(f"{sampling.prompts}: no prompt left to sample (held-out prompts skipped: {skipped['held_out_prompt']})")
    return rows, skipped


def _answers(recipe: Recipe, sampling: Sampling, rows: list, ids: list, candidates_path: Path, digest: str, backend: str, log):
    """The SFT model's K answers to each prompt, sampled once and kept beside the set (reused while the model, adapter
    and settings are the same)."""
    from caretune.generation.chat_models import chat_model
    from caretune.lf import sample_all

    candidates = _load_candidates(candidates_path, digest)
    if candidates is None or not set(ids) <= set(candidates):
        model = chat_model(recipe.args, as_shown=False, backend=backend)
        sampled = sample_all(
            model,
            [(messages, system or None) for messages, system, _ in rows],
            sampling.candidates,
            sampling.seed,
            temperature=sampling.temperature,
            max_new_tokens=sampling.max_new_tokens,
        )
        candidates = {key: [strip_think(answer) for answer in answers] for key, answers in zip(ids, sampled)}
        candidates_path.parent.mkdir(parents=True, exist_ok=True)
        _save_candidates(candidates_path, digest, candidates)
    else:
        log(f"prefs: reusing the sampled answers in {candidates_path} (same model, adapter and settings)")

    return candidates


def _outcomes(judge: Judge, rows: list, ids: list, candidates: dict, language: str) -> dict:
    """Each prompt's verdict per pair of its answers, judged in both orders."""
    calls = {}
    for key, (messages, _, _) in zip(ids, rows):
        answers = candidates[key]
        for i in range(len(answers)):
            for j in range(i + 1, len(answers)):
                calls[(key, i, j)] = (
                    pair_call(messages, answers[i], answers[j], language),
                    pair_call(messages, answers[j], answers[i], language),
                )
    verdicts = judge.verdicts([call for pair in calls.values() for call in pair], "prefs")
    model_name = judge.endpoint.model
    outcomes: dict[str, dict[tuple[int, int], str]] = {key: {} for key in ids}
    for (key, i, j), (first, second) in calls.items():
        outcomes[key][(i, j)] = verdict_of(verdicts[first.key(model_name)]["winner"], verdicts[second.key(model_name)]["winner"])

    return outcomes


def _picked(recipe: Recipe, rows: list, ids: list, candidates: dict, outcomes: dict, skipped: Counter):
    """(records, (chosen, rejected) lengths, verdict counts by whether the prompt trained): the decisive pair of each
    prompt, fitted to the cutoff; what is left out is counted in `skipped`."""
    from caretune.lf import effective_cutoff_len
    from caretune.prep.fitting import TemplateTokenCounter
    from converters.prefs import fitted

    records, lengths, by_seen = [], [], {True: Counter(), False: Counter()}
    cutoff_len, count = effective_cutoff_len(recipe.args), TemplateTokenCounter(recipe.args.get("template") or TEMPLATE)
    for key, (messages, system, seen) in zip(ids, rows):
        answers = candidates[key]
        by_seen[seen].update(outcomes[key].values())
        if len(set(answers)) < 2:
            skipped["identical_answers"] += 1
            continue
        picked = pick_pair(answers, outcomes[key])
        if picked is None:
            skipped["no_decisive_pair"] += 1
            continue
        chosen, rejected = answers[picked[0]], answers[picked[1]]
        record = fitted(
            {
                "conversations": [{"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in messages],
                CHOSEN: {"from": "gpt", "value": chosen},
                REJECTED: {"from": "gpt", "value": rejected},
                "system": system or "",
            },
            cutoff_len,
            count,
        )
        if record is None:  # LLaMA-Factory's pairwise processor would cut the question off
            skipped["too_long"] += 1
            continue
        lengths.append((len(chosen), len(rejected)))
        records.append(record)
    return records, lengths, by_seen


def _tie_rate(counts: Counter) -> float | None:
    judged = sum(n for verdict, n in counts.items() if verdict != "unparsed")
    return round(counts["tie"] / judged, 4) if judged else None


def _report(recipe, name, out, sampling, rows, outcomes, by_seen, lengths, skipped, judge, changed) -> dict:
    verdicts = Counter(v for pairs in outcomes.values() for v in pairs.values())
    differences = [chosen - rejected for chosen, rejected in lengths]
    return {
        "dataset": name,
        "output": str(out),
        "recipe": str(recipe.path),
        "adapter": recipe.adapter,
        "sampling": asdict(sampling),
        "prompts_tried": len(rows),
        "pairs_kept": len(lengths),
        "prompts_skipped": dict(sorted(skipped.items())),
        "pair_verdicts": {
            "decisive": verdicts["i"] + verdicts["j"],
            "ties": verdicts["tie"],
            "inconsistent": verdicts["inconsistent"],
            "unparsed": verdicts["unparsed"],
        },
        "tie_rate": {
            "all": _tie_rate(verdicts),
            "prompts_sft_trained_on": _tie_rate(by_seen[True]),
            "prompts_kept_out_of_sft": _tie_rate(by_seen[False]),
            "prompts_sft_trained_on_count": sum(seen for _, _, seen in rows),
        },
        "length_chars": {
            "chosen_mean": round(statistics.fmean(c for c, _ in lengths), 1),
            "rejected_mean": round(statistics.fmean(r for _, r in lengths), 1),
            "mean_difference": round(statistics.fmean(differences), 1),
            "chosen_longer_share": round(sum(d > 0 for d in differences) / len(differences), 4),
        },
        "registry_changed": changed,
        **judge.summary(),
    }


def summary_line(report: dict) -> str:
    """The one line `caretune prefs build` prints."""
    verdicts, lengths, ties = report["pair_verdicts"], report["length_chars"], report["tie_rate"]
    return (
        f"prefs: {report['pairs_kept']} pairs from {report['prompts_tried']} prompts -> {report['output']} "
        f"({report['dataset']}); pair verdicts: {verdicts['decisive']} decisive, {verdicts['ties']} ties, "
        f"{verdicts['inconsistent']} inconsistent, {verdicts['unparsed']} unparsed; tie rate {ties['all']}; "
        f"chosen longer in {lengths['chosen_longer_share']:.0%} (mean {lengths['mean_difference']:+.0f} chars: a judge "
        f"that likes length teaches length); {report['calls']} calls, {report['cached']} cached"
    )
