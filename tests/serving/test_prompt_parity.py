"""One prompt everywhere: for a hybrid Qwen3, the prompt a training row teaches equals the prompt every serving
path builds for the same conversation (caretune.thinking states the policy).

Compared, with the real Qwen3 tokenizer and the shipped qwen3-8b recipes' keys: LLaMA-Factory's training encoding
(its supervised processor), its inference encoding (the chat engines', the API's, predict's), Qwen3's own chat
template with enable_thinking=False, the exported template with default arguments, and the Ollama Modelfile's."""

import copy
import re
from types import SimpleNamespace

import pytest
import yaml

from caretune.constants import MEDICAL_SYSTEM_PROMPT
from caretune.thinking import EMPTY_THINK
from tests.helpers import ROOT

pytestmark = pytest.mark.lf

IGNORE_INDEX = -100
ONE_TURN = [{"role": "user", "content": "最近三天低烧，嗓子疼，需要吃抗生素吗？"}]
MULTI_TURN = [
    {"role": "user", "content": "我最近总是胃疼，饭后更厉害。"},
    {"role": "assistant", "content": "饭后上腹痛加重常见于胃溃疡，建议到消化内科就诊。"},
    {"role": "user", "content": "需要做胃镜吗？"},
]
ANSWER = "建议做胃镜并检测幽门螺杆菌，具体请以医生诊断为准。"


def _recipe(task: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / "qwen3-8b" / f"{task}.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tokenizer():
    from caretune.prep.tokenizer import offline_tokenizer

    return offline_tokenizer()


def _data_args(recipe: dict):
    from dataclasses import fields

    from llamafactory.hparams import DataArguments

    names = {f.name for f in fields(DataArguments)}
    return DataArguments(**{k: v for k, v in recipe.items() if k in names and k not in ("dataset", "eval_dataset")})


def _template(tokenizer, recipe: dict):
    """LLaMA-Factory's template as a process running `recipe` gets it (a copy: LLaMA-Factory shares one per name and
    sets the recipe's options on it)."""
    from caretune.lf import chat_template

    return copy.deepcopy(chat_template(tokenizer, _data_args(recipe)))


def _split(messages, system):
    """LLaMA-Factory's aligned row: system apart, the prompt turns and the answer."""
    return messages, [{"role": "assistant", "content": ANSWER}], system


def training_prompt(tokenizer, messages, system) -> list[int]:
    """The training row's tokens before its (last) answer's first trained label."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    recipe = _recipe("lora_sft")
    processor = SupervisedDatasetProcessor(
        template=_template(tokenizer, recipe), tokenizer=tokenizer, processor=None, data_args=_data_args(recipe)
    )
    prompt, response, system = _split(messages, system)
    ids, labels = processor._encode_data_example(prompt, response, system, None, [], [], [])
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert tokenizer.decode(ids[start:]) == ANSWER + "<|im_end|>\n"  # the last answer is what is trained
    return ids[:start]


def predict_prompt(tokenizer, messages, system) -> list[int]:
    """What `predict` (LLaMA-Factory's unsupervised processor under predict.yaml) feeds the model."""
    from llamafactory.data.processor.unsupervised import UnsupervisedDatasetProcessor

    recipe = _recipe("predict")
    processor = UnsupervisedDatasetProcessor(
        template=_template(tokenizer, recipe), tokenizer=tokenizer, processor=None, data_args=_data_args(recipe)
    )
    prompt, response, system = _split(messages, system)
    ids, _ = processor._encode_data_example(prompt, response, system, None, [], [], [])
    return ids


def chat_prompt(tokenizer, messages, system) -> list[int]:
    """What LLaMA-Factory's chat engines (hf, vLLM, SGLang) build under chat.yaml: the messages and an empty reply."""
    template = _template(tokenizer, _recipe("chat"))
    return template.encode_oneturn(tokenizer, [*messages, {"role": "assistant", "content": ""}], system)[0]


def api_prompt(tokenizer, messages, system) -> list[int]:
    """What `caretune api` builds (caretune.generation.local.LocalGenerator.prompt_ids) under chat.yaml."""
    from caretune.generation.local import LocalGenerator

    engine = SimpleNamespace(template=_template(tokenizer, _recipe("chat")), tokenizer=tokenizer)
    return LocalGenerator.prompt_ids(SimpleNamespace(engine=engine, tokenizer=tokenizer), messages, system)


def qwen3_prompt(tokenizer, messages, system) -> str:
    """Qwen3's own chat template with enable_thinking=False."""
    return tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, *messages], add_generation_prompt=True, tokenize=False, enable_thinking=False
    )


def exported_prompt(tokenizer, messages, system) -> str:
    """The exported model's template (caretune export's rewrite of Qwen3's) with default arguments."""
    from caretune.serving.export import non_thinking_template

    return tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, *messages],
        chat_template=non_thinking_template(tokenizer.chat_template),
        add_generation_prompt=True,
        tokenize=False,
    )


def render_ollama(template: str, system: str, messages: list[dict]) -> str:
    """Ollama's Go-template rendering of the constructs LLaMA-Factory's Modelfile and caretune's rewrite use:
    `if .System`, `range` (with `$i, $m` and `$last`), `if eq .Role "..."`, `else if`, `if $last`, `.Content`."""
    tokens = re.split(r"({{.*?}})", template)
    position = 0

    def block(scope: dict, stop: tuple[str, ...]) -> tuple[str, str]:
        nonlocal position
        out = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if not token.startswith("{{"):
                out.append(token)
                continue
            action = token[2:-2].strip()
            if (action == "end" and "end" in stop) or (action.startswith("else") and "else" in stop):
                return "".join(out), action
            if action.startswith("range"):
                start, body = position, ""
                for index in range(len(messages)):
                    position = start
                    last = index == len(messages) - 1
                    body_text, _ = block({**scope, "message": messages[index], "last": last}, ("end",))
                    body += body_text
                if not messages:
                    block({**scope, "message": None, "last": False}, ("end",))
                out.append(body)
            elif action.startswith("$last :="):
                continue
            elif action.startswith("if "):
                out.append(conditional(action[3:], scope))
            elif action == ".System":
                out.append(system)
            elif action == ".Content":
                out.append(scope["message"]["content"])
            else:
                raise AssertionError(f"unsupported Ollama template action {action!r}")
        return "".join(out), ""

    def holds(condition: str, scope: dict) -> bool:
        if condition == ".System":
            return bool(system)
        if condition == "$last":
            return scope["last"]
        found = re.fullmatch(r'eq \.Role "(\w+)"', condition)
        assert found, f"unsupported condition {condition!r}"
        return scope["message"]["role"] == found.group(1)

    def conditional(condition: str, scope: dict) -> str:
        chosen, taken = "", False
        while True:
            text, ended = block(scope, ("end", "else"))
            if not taken and holds(condition, scope):
                chosen, taken = text, True
            if ended == "end":
                return chosen
            if ended.startswith("else if "):
                condition = ended[len("else if ") :]
            else:  # a plain else
                condition = None
                text, _ = block(scope, ("end",))
                return chosen if taken else text

    rendered, _ = block({}, ())
    return rendered


def ollama_prompt(tokenizer, messages, system) -> str:
    """The exported Ollama Modelfile's TEMPLATE (LLaMA-Factory's, rewritten by caretune export), rendered."""
    from caretune.serving.export import non_thinking_modelfile

    modelfile = non_thinking_modelfile(_template(tokenizer, _recipe("export")).get_ollama_modelfile(tokenizer))
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.DOTALL).group(1)
    default_system = re.search(r'SYSTEM """(.*?)"""', modelfile, re.DOTALL).group(1)
    assert default_system == MEDICAL_SYSTEM_PROMPT
    return render_ollama(template, system, messages)


def _all_prompts(tokenizer, messages) -> dict[str, str]:
    system = MEDICAL_SYSTEM_PROMPT
    decoded = {
        name: tokenizer.decode(build(tokenizer, messages, system))
        for name, build in (("training", training_prompt), ("predict", predict_prompt), ("chat", chat_prompt), ("api", api_prompt))
    }
    texts = {
        "qwen3 (enable_thinking=False)": qwen3_prompt(tokenizer, messages, system),
        "exported": exported_prompt(tokenizer, messages, system),
        "ollama": ollama_prompt(tokenizer, messages, system),
    }
    return {**decoded, **texts}


@pytest.mark.parametrize("messages", [ONE_TURN, MULTI_TURN], ids=["one turn", "multi-turn"])
def test_every_path_renders_the_training_prompt(tokenizer, messages):
    prompts = _all_prompts(tokenizer, messages)
    training = prompts["training"]
    assert training.startswith(f"<|im_start|>system\n{MEDICAL_SYSTEM_PROMPT}<|im_end|>\n")
    assert training.endswith(f"{messages[-1]['content']}<|im_end|>\n<|im_start|>assistant\n{EMPTY_THINK}")
    assert training.count(EMPTY_THINK) == 1  # history answers carry no think block, as Qwen3's template renders them
    different = {name: text for name, text in prompts.items() if text != training}
    assert not different, f"differs from the training prompt {training!r}: {different}"


def test_the_token_ids_agree_too(tokenizer):
    """Text equality could hide a different split into tokens: the ids of training, predict, chat and the API agree,
    and the empty think block is Qwen3's four tokens."""
    system = MEDICAL_SYSTEM_PROMPT
    for messages in (ONE_TURN, MULTI_TURN):
        ids = [build(tokenizer, messages, system) for build in (training_prompt, predict_prompt, chat_prompt, api_prompt)]
        assert all(other == ids[0] for other in ids[1:])
        assert ids[0][-4:] == [151667, 271, 151668, 271]  # <think> \n\n </think> \n\n
        encoded = tokenizer.encode(qwen3_prompt(tokenizer, messages, system), add_special_tokens=False)
        assert encoded == ids[0]


def test_the_ollama_renderer_reads_llamafactorys_modelfile_as_written(tokenizer):
    """Before caretune's rewrite, LLaMA-Factory's Modelfile renders a thinking prompt (no empty think block): the
    renderer follows the template, it does not produce the expected text by itself."""
    modelfile = _template(tokenizer, _recipe("export")).get_ollama_modelfile(tokenizer)
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.DOTALL).group(1)
    rendered = render_ollama(template, MEDICAL_SYSTEM_PROMPT, MULTI_TURN)
    assert rendered.endswith("<|im_start|>assistant\n") and EMPTY_THINK not in rendered
    assert rendered == qwen3_prompt(tokenizer, MULTI_TURN, MEDICAL_SYSTEM_PROMPT).removesuffix(EMPTY_THINK)


def test_the_old_nothink_template_differed(tokenizer):
    """The figure before the change: `qwen3_nothink` rendered no empty think block, so a hybrid Qwen3 thought."""
    nothink = {**_recipe("chat"), "template": "qwen3_nothink"}
    prompt = _template(tokenizer, nothink).encode_oneturn(tokenizer, [*ONE_TURN, {"role": "assistant", "content": ""}], None)[0]
    text = tokenizer.decode(prompt)
    assert text.endswith("<|im_start|>assistant\n")
    assert text + EMPTY_THINK == qwen3_prompt(tokenizer, ONE_TURN, MEDICAL_SYSTEM_PROMPT)
