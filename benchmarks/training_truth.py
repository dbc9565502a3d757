"""What LLaMA-Factory actually trains on, for converted multi-turn files: every training row encoded by its own
supervised processor under the shipped Qwen3-8B recipe, before (one row per conversation, no fitting: the previous
conversion) and after (one row per trained answer, fitted to the recipe's cutoff_len).

    python benchmarks/training_truth.py [--recipe recipes/qwen3-8b/lora_sft.yaml]

Inputs (from ../shared/data when present): HuatuoGPT-II's 100 real doctor-patient dialogues (`Real Dialogue`,
patient turns as questions, the doctor's as answers), converted by `caretune convert huatuo`; the general ShareGPT
1K file, by `caretune convert general` (its default trains the last answer; `--train-answers all` is measured too).
Per conversion: conversations and answers kept, answers trained on the prompt chat serves at that point, rows
LLaMA-Factory truncates, rows that lose their system prompt, and the tokens an epoch.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"
IGNORE_INDEX = -100
SPEAKER_TURN = re.compile(r"(医生|病人|患者)：\n(.*?)(?=\n(?:医生|病人|患者)：\n|\Z)", re.DOTALL)


def real_dialogues(out: Path) -> Path | None:
    """HuatuoGPT-II's real consultations as ShareGPT rows: consecutive lines of one speaker joined, the dialogue
    starting at the patient's first turn and ending at the doctor's last."""
    source = SHARED / "eval" / "huatuo100" / "huatuo100_conv" / "GPT4.json"
    if not source.is_file():
        return None
    rows = []
    for item in json.loads(source.read_text(encoding="utf-8")):
        turns: list[list[str]] = []
        for speaker, text in SPEAKER_TURN.findall(item["Real Dialogue"]):
            role = "gpt" if speaker == "医生" else "human"
            if turns and turns[-1][0] == role:
                turns[-1][1] += "\n" + text.strip()
            else:
                turns.append([role, text.strip()])
        while turns and turns[0][0] != "human":
            turns.pop(0)
        if turns and turns[-1][0] == "human":
            turns.pop()
        if turns:
            rows.append({"conversations": [{"from": role, "value": text} for role, text in turns]})
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return out


def convert(source: str, raw: Path, folder: Path, *extra: str) -> dict:
    from click.testing import CliRunner

    from caretune.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{source}.json"
    args = ["convert", source, str(raw), "--out", str(out), "--dataset-info", str(folder / "dataset_info.json")]
    result = CliRunner().invoke(main, [*args, "--no-card", "--eval-size", "0", "--json", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


class Encoder:
    """LLaMA-Factory's supervised processor and its chat engines' prompt, as the shipped recipes set them."""

    def __init__(self, recipe: Path):
        import yaml
        from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
        from llamafactory.hparams import DataArguments

        from caretune.lf import chat_template
        from caretune.prep.tokenizer import offline_tokenizer

        args = yaml.safe_load(recipe.read_text(encoding="utf-8"))
        names = {field for field in DataArguments.__dataclass_fields__}
        self.data_args = DataArguments(**{k: v for k, v in args.items() if k in names and k not in ("dataset", "eval_dataset")})
        self.tokenizer = offline_tokenizer()
        self.template = chat_template(self.tokenizer, self.data_args)
        self.processor = SupervisedDatasetProcessor(
            template=self.template, tokenizer=self.tokenizer, processor=None, data_args=self.data_args
        )

    def row(self, row: dict) -> dict:
        """One training row: does it train its last answer, on the served prompt, whole, with its system prompt?"""
        roles = {"human": "user", "gpt": "assistant"}
        messages = [{"role": roles[turn["from"]], "content": turn["value"]} for turn in row["conversations"]]
        system = row.get("system") or None
        ids, labels = self.processor._encode_data_example(messages[:-1], messages[-1:], system, None, [], [], [])
        whole = sum(len(s) + len(t) for s, t in self.template.encode_multiturn(self.tokenizer, messages, system, None, True))
        trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        served, _ = self.template.encode_oneturn(self.tokenizer, [*messages[:-1], {"role": "assistant", "content": ""}], system)
        answer = messages[-1]["content"] + "<|im_end|>\n"
        on_served = bool(trained) and ids[: trained[0]] == served and self.tokenizer.decode(ids[trained[0] :]) == answer
        text = self.tokenizer.decode(ids)
        return {
            "tokens": len(ids),
            "truncated": whole > len(ids),
            "on_served_prompt": on_served and trained == list(range(trained[0], len(ids))),
            "system_kept": system is None or text.startswith(f"<|im_start|>system\n{system}<|im_end|>\n"),
        }


def measure(encoder: Encoder, report: dict, train_file: Path) -> dict:
    rows = [encoder.row(row) for row in json.loads(train_file.read_text(encoding="utf-8"))]
    training = report.get("training") or {}
    answers = training.get("answers")
    return {
        "conversations": report["written"],
        "answers": answers,
        "rows": len(rows),
        "answers_trained_on_served_prompt": sum(r["on_served_prompt"] and not r["truncated"] for r in rows),
        "rows_truncated_by_llamafactory": sum(r["truncated"] for r in rows),
        "rows_without_their_system_prompt": sum(not r["system_kept"] for r in rows),
        "fitted_rows": training.get("fitted_rows", 0),
        "tokens_per_epoch": sum(r["tokens"] for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "qwen3-8b" / "lora_sft.yaml")
    args = parser.parse_args()
    encoder = Encoder(args.recipe)
    before = ("--train-answers", "last", "--cutoff-len", "0")
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        medical = real_dialogues(scratch / "huatuo100_dialogues.jsonl")
        general = SHARED / "sharegpt" / "sharegpt_zh_1K_format.jsonl"
        cases = []
        if medical:  # doctors' short replies ("不客气") would skip most dialogues: that filter and the cut one are off
            kept = ("--keep", "short_answer", "--keep", "truncated_answer")
            cases += [
                ("medical dialogues, before", "huatuo", medical, (*before, *kept)),
                ("medical dialogues, after", "huatuo", medical, kept),
            ]
        if general.is_file():
            cases += [
                ("general 1K, before", "general", general, before),
                ("general 1K, after (last answer)", "general", general, ()),
                ("general 1K, every answer", "general", general, ("--train-answers", "all")),
            ]
        for number, (name, source, raw, extra) in enumerate(cases):
            folder = scratch / f"case{number}"
            report = convert(source, raw, folder, *extra)
            results[name] = measure(encoder, report, Path(report["outputs"]["train"]))
    print(json.dumps(results, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
