"""The token counter that fitting uses is LLaMA-Factory's own encoding, and fitted rows reach its supervised
processor whole: no row cut, no system prompt lost, each row training its last answer."""

import copy
import json

import pytest

from caretune.constants import MEDICAL_SYSTEM_PROMPT
from caretune.prep.fitting import TemplateTokenCounter
from tests.helpers import ROOT

pytestmark = pytest.mark.lf

IGNORE_INDEX = -100
TURNS = [
    ("我最近总是胃疼，饭后更厉害，已经一个月了。", "饭后上腹痛加重常见于胃溃疡或胃炎，建议到消化内科就诊。"),
    ("需要做胃镜吗？", "建议做胃镜并检测幽门螺杆菌，具体请以医生诊断为准。"),
    ("胃镜疼不疼？有无痛的吗？", "有无痛胃镜，麻醉下进行，检查前需空腹，具体请咨询医院。"),
]


def _processor(cutoff_len: int):
    import yaml
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor
    from llamafactory.hparams import DataArguments

    from caretune.lf import chat_template
    from caretune.prep.tokenizer import offline_tokenizer

    recipe = yaml.safe_load((ROOT / "recipes" / "qwen3-8b" / "lora_sft.yaml").read_text(encoding="utf-8"))
    names = set(DataArguments.__dataclass_fields__)
    data_args = DataArguments(**{k: v for k, v in recipe.items() if k in names and k not in ("dataset", "eval_dataset")})
    data_args.cutoff_len = cutoff_len
    tokenizer = offline_tokenizer()
    # a training process's own template: LLaMA-Factory shares one per name, and other tests set a chat recipe's
    # default_system on it (the training recipe sets none)
    template = copy.deepcopy(chat_template(tokenizer, data_args))
    template.default_system = ""
    return SupervisedDatasetProcessor(template=template, tokenizer=tokenizer, processor=None, data_args=data_args), tokenizer


def _encode(processor, turns, system):
    messages = [{"role": r, "content": t} for q, a in turns for r, t in (("user", q), ("assistant", a))]
    return processor._encode_data_example(messages[:-1], messages[-1:], system, None, [], [], [])


@pytest.mark.parametrize("system", [MEDICAL_SYSTEM_PROMPT, ""])
def test_the_counts_are_llamafactorys_row_lengths_for_every_window(system):
    processor, _ = _processor(1 << 20)
    counts = TemplateTokenCounter()(system, TURNS)
    for last in range(len(TURNS)):
        for first in range(last + 1):
            ids, _ = _encode(processor, TURNS[first : last + 1], system or None)
            assert len(ids) == counts.system + sum(counts.turns[first : last + 1]) + counts.think, (first, last)


@pytest.mark.slow
def test_a_long_consultation_converted_with_fitting_reaches_llamafactory_whole(tmp_path):
    from converters import huatuo
    from converters.options import Options
    from tests.helpers import convert_into

    cutoff = 300
    long_turns = [
        (
            f"第{n}次复诊：胃疼还是反复，吃了药好一点，晚上还会疼，需要换药吗？",
            "，".join(f"第{i}条建议" for i in range(25)) + "。请遵医嘱。",
        )
        for n in range(8)
    ]
    raw = tmp_path / "consultation.jsonl"
    turns = [{"from": r, "value": t} for q, a in long_turns for r, t in (("human", q), ("gpt", a))]
    raw.write_text(json.dumps({"conversations": turns}, ensure_ascii=False) + "\n", encoding="utf-8")
    options = Options(care_reminder="off", cutoff_len=cutoff, count=TemplateTokenCounter())
    report, outputs = convert_into(tmp_path, huatuo, raw, eval_size=0, options=options)
    rows = json.loads(outputs.train.read_text(encoding="utf-8"))
    assert len(rows) == 8 and report["training"]["fitted_rows"] > 0  # every answer trains; long rows lost old turns
    processor, tokenizer = _processor(cutoff)
    for row in rows:
        pairs = [
            (row["conversations"][i]["value"], row["conversations"][i + 1]["value"]) for i in range(0, len(row["conversations"]), 2)
        ]
        ids, labels = _encode(processor, pairs, row["system"])
        untruncated, _ = _encode(_processor(1 << 20)[0], pairs, row["system"])
        assert ids == untruncated and len(ids) <= cutoff  # LLaMA-Factory cut nothing
        text = tokenizer.decode(ids)
        assert text.startswith(f"<|im_start|>system\n{MEDICAL_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n")
        trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
        assert tokenizer.decode(ids[trained[0] :]) == pairs[-1][1] + "<|im_end|>\n"
