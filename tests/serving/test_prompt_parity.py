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


def _split(messages, system, answer=ANSWER):
    """LLaMA-Factory's aligned row: system apart, the prompt turns and the answer."""
    return messages, [{"role": "assistant", "content": answer}], system


def training_prompt(tokenizer, messages, system, answer=ANSWER) -> list[int]:
    """The training row's tokens before its (last) answer's first trained label; the row trains that answer only."""
    from llamafactory.data.processor.supervised import SupervisedDatasetProcessor

    recipe = _recipe("lora_sft")
    processor = SupervisedDatasetProcessor(
        template=_template(tokenizer, recipe), tokenizer=tokenizer, processor=None, data_args=_data_args(recipe)
    )
    prompt, response, system = _split(messages, system, answer)
    ids, labels = processor._encode_data_example(prompt, response, system, None, [], [], [])
    trained = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    start = trained[0]
    assert trained == list(range(start, len(ids)))  # one run of trained tokens, at the end
    assert tokenizer.decode(ids[start:]) == answer + "<|im_end|>\n"  # the last answer is what is trained
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


def _go_value(expression: str, scope: dict, system: str, messages: list[dict]):
    """The value of a Go-template pipeline of the kinds Ollama Modelfiles use: `eq A B`, `len X`, `slice X i`,
    parentheses, `$.Messages`, `.Messages`, `$var`, `.Role`, `.Content`, `.System`, numbers and strings."""
    tokens = re.findall(r'\(|\)|"[^"]*"|[^\s()]+', expression)

    def parse(position: int) -> tuple[list, int]:
        items = []
        while position < len(tokens):
            token = tokens[position]
            position += 1
            if token == "(":
                inner, position = parse(position)
                items.append(inner)
            elif token == ")":
                return items, position
            else:
                items.append(token)
        return items, position

    def value(node):
        if isinstance(node, list):
            if len(node) == 1:
                return value(node[0])
            name, *args = node
            args = [value(arg) for arg in args]
            functions = {"eq": lambda a, b: a == b, "len": len, "slice": lambda items, i: items[i:], "not": lambda a: not a}
            assert name in functions, f"unsupported Go template function {name!r}"
            return functions[name](*args)
        if node in ("$.Messages", ".Messages"):
            return messages
        if node == ".System":
            return system
        if node in (".Role", ".Content"):
            return scope["message"][node[1:].lower()]
        if node.startswith("$"):
            return scope[node]
        if node.startswith('"'):
            return node[1:-1]
        return int(node)

    tree, _ = parse(0)
    return value(tree)


def render_ollama(template: str, system: str, messages: list[dict]) -> str:
    """Ollama's Go-template rendering of the constructs LLaMA-Factory's Modelfile and caretune's rewrite use:
    `if .System`, `range` (plain, or `$i, $m :=`), variable definitions (`$last := eq (len (slice $.Messages $i)) 1`,
    evaluated, not assumed), `if`/`else if`/`else` on a pipeline, `.Content`."""
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
                index_name = re.fullmatch(r"range (\$\w+), \$\w+ := \.Messages|range \.Messages", action)
                assert index_name, f"unsupported range {action!r}"
                start, body = position, ""
                for index in range(len(messages)):
                    position = start
                    inner = {**scope, "message": messages[index]}
                    if index_name.group(1):
                        inner[index_name.group(1)] = index
                    body_text, _ = block(inner, ("end",))
                    body += body_text
                if not messages:
                    block({**scope, "message": None}, ("end",))
                out.append(body)
            elif re.fullmatch(r"\$\w+ := .+", action):
                name, expression = action.split(" := ", 1)
                scope[name] = _go_value(expression, scope, system, messages)
            elif action.startswith("if "):
                out.append(conditional(action[3:], scope))
            elif action in (".System", ".Content"):
                out.append(_go_value(action, scope, system, messages))
            else:
                raise AssertionError(f"unsupported Ollama template action {action!r}")
        return "".join(out), ""

    def conditional(condition: str, scope: dict) -> str:
        chosen, taken = "", False
        while True:
            text, ended = block(scope, ("end", "else"))
            if not taken and _go_value(condition, scope, system, messages):
                chosen, taken = text, True
            if ended == "end":
                return chosen
            if ended.startswith("else if "):
                condition = ended[len("else if ") :]
            else:  # a plain else
                text, _ = block(scope, ("end",))
                return chosen if taken else text

    rendered, _ = block({}, ())
    return rendered


def ollama_prompt(tokenizer, messages, system, rewrite=None) -> str:
    """The exported Ollama Modelfile's TEMPLATE (LLaMA-Factory's, rewritten by caretune export), rendered."""
    from caretune.serving.export import non_thinking_modelfile

    modelfile = non_thinking_modelfile(_template(tokenizer, _recipe("export")).get_ollama_modelfile(tokenizer))
    if rewrite:
        modelfile = rewrite(modelfile)
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.DOTALL).group(1)
    default_system = re.search(r'SYSTEM """(.*?)"""', modelfile, re.DOTALL).group(1)
    assert default_system == MEDICAL_SYSTEM_PROMPT
    return render_ollama(template, system, messages)


def _all_prompts(tokenizer, messages, answer=ANSWER) -> dict[str, str]:
    system = MEDICAL_SYSTEM_PROMPT
    decoded = {"training": tokenizer.decode(training_prompt(tokenizer, messages, system, answer))}
    decoded |= {
        name: tokenizer.decode(build(tokenizer, messages, system))
        for name, build in (("predict", predict_prompt), ("chat", chat_prompt), ("api", api_prompt))
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


CONSULTATION = [  # a multi-turn consultation: every answer trains, each on the prompt chat renders at that point
    ("孩子三岁，发烧两天了，最高39度。", "三岁孩子发热两天、最高39℃，先观察精神状态；精神差或持续高热请尽快到儿科就诊。"),
    ("精神还可以，能吃能玩。", "精神好时可先物理降温、多喝水，超过38.5℃可按说明用退热药，48小时不退请就医。"),
    ("晚上开始咳嗽了，要紧吗？", "发热伴咳嗽多为呼吸道感染，建议到儿科就诊听诊，必要时查血常规，具体请遵医嘱。"),
]


def _at(position: int) -> tuple[list[dict], str]:
    """The messages before the answer at `position` (0-based) and that answer."""
    history = [
        {"role": role, "content": text} for q, a in CONSULTATION[:position] for role, text in (("user", q), ("assistant", a))
    ]
    return [*history, {"role": "user", "content": CONSULTATION[position][0]}], CONSULTATION[position][1]


@pytest.mark.parametrize("position", range(len(CONSULTATION)), ids=["answer 1", "answer 2", "answer 3"])
def test_every_answer_position_trains_on_the_prompt_every_path_serves(tokenizer, position):
    messages, answer = _at(position)
    prompts = _all_prompts(tokenizer, messages, answer)
    training = prompts["training"]
    assert training.count(EMPTY_THINK) == 1 and training.endswith(EMPTY_THINK)
    different = {name: text for name, text in prompts.items() if text != training}
    assert not different, f"answer {position + 1}: differs from the training prompt {training!r}: {different}"


def test_the_converted_rows_train_every_answer_on_its_served_prompt(tokenizer, tmp_path):
    """`caretune convert huatuo` writes one training row per answer; each, encoded by LLaMA-Factory's supervised
    processor under the shipped recipe, trains exactly that answer, on the prompt chat serves at that point."""
    import json

    from converters import huatuo
    from converters.options import Options
    from tests.helpers import convert_into

    raw = tmp_path / "consultation.jsonl"
    turns = [{"from": role, "value": text} for q, a in CONSULTATION for role, text in (("human", q), ("gpt", a))]
    raw.write_text(json.dumps({"conversations": turns}, ensure_ascii=False) + "\n", encoding="utf-8")
    report, outputs = convert_into(tmp_path, huatuo, raw, eval_size=0, options=Options(care_reminder="off"))
    rows = json.loads(outputs.train.read_text(encoding="utf-8"))
    assert report["training"]["rows"] == len(rows) == 3 and report["training"]["trained_answers"] == 3
    assert len({row["conversation"] for row in rows}) == 1
    for position, row in enumerate(rows):
        messages = [{"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in row["conversations"]]
        served = chat_prompt(tokenizer, messages[:-1], row["system"])
        assert training_prompt(tokenizer, messages[:-1], row["system"], messages[-1]["content"]) == served, position


def test_a_wrong_last_rule_in_the_modelfile_fails_the_parity(tokenizer):
    """The Modelfile's `$last` definition is evaluated: one that marks the wrong message puts the empty think block
    in the wrong place, and the rendering no longer equals the training prompt."""
    from caretune.serving.export import OLLAMA_MESSAGES_WITH_LAST

    messages, answer = _at(2)
    training = tokenizer.decode(training_prompt(tokenizer, messages, MEDICAL_SYSTEM_PROMPT, answer))
    assert ollama_prompt(tokenizer, messages, MEDICAL_SYSTEM_PROMPT) == training
    for wrong in ("eq (len (slice $.Messages $i)) 2", "eq $i 0"):
        rewrite = lambda modelfile, wrong=wrong: modelfile.replace(  # noqa: E731
            OLLAMA_MESSAGES_WITH_LAST, OLLAMA_MESSAGES_WITH_LAST.replace("eq (len (slice $.Messages $i)) 1", wrong)
        )
        assert ollama_prompt(tokenizer, messages, MEDICAL_SYSTEM_PROMPT, rewrite) != training, wrong
