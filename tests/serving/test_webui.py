"""caretune webui: the training form holds the recipe, and the WebUI's "Preview command" equals the recipe key by
key; checked through LLaMA-Factory's own form code, then in a real Chromium."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from caretune.constants import DEFAULT_TRAIN_RECIPE
from caretune.serving.webui import form_values, model_label
from tests.helpers import ROOT, free_port, run_caretune, start_caretune

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = pytest.mark.slow


def recipe_args(relative: str) -> dict:
    return yaml.safe_load((ROOT / relative).read_text(encoding="utf-8"))


def ship_deepspeed(args: dict) -> dict | None:
    """The shipped DeepSpeed config a recipe names (None without one)."""
    return json.loads((ROOT / args["deepspeed"]).read_text(encoding="utf-8")) if args.get("deepspeed") else None


def command_keys(preview: str) -> dict:
    """`--key value` pairs of the WebUI's previewed `llamafactory-cli train` command, values read as YAML."""
    keys = {}
    for line in preview.strip().strip("`").removeprefix("bash").splitlines():
        line = line.strip().rstrip("\\").strip()
        if line.startswith("--"):
            key, _, value = line[2:].partition(" ")
            keys[key] = number_or_yaml(value)
    return keys


def number_or_yaml(text: str):
    """A command-line value as LLaMA-Factory's parser takes it ("5e-05" is a number there, a string to YAML 1.1)."""
    try:
        return float(text) if any(c in text for c in ".eE") and not text.isalpha() else yaml.safe_load(text)
    except ValueError:
        return yaml.safe_load(text)


def assert_command_is_the_recipe(keys: dict, args: dict) -> None:
    """Every recipe key that LLaMA-Factory keeps (it drops false and empty values) is in the command with the
    same value; the only extras are `packing` (what neat_packing implies) and the WebUI's copy of our ZeRO config."""
    kept = {k: v for k, v in args.items() if v is not None and v is not False and v != "" or k == "enable_thinking"}
    ours_deepspeed, theirs_deepspeed = kept.pop("deepspeed", None), keys.pop("deepspeed", None)
    assert keys.pop("packing") is bool(kept.get("neat_packing"))
    assert keys == kept
    if ours_deepspeed:  # the WebUI's own ZeRO config: the same stage, and the same settings as ours
        ours = json.loads((ROOT / ours_deepspeed).read_text(encoding="utf-8"))
        assert theirs_deepspeed.endswith(f"ds_z{ours['zero_optimization']['stage']}_config.json"), theirs_deepspeed
        assert json.loads((ROOT / theirs_deepspeed).read_text(encoding="utf-8")) == ours


@pytest.mark.parametrize(
    "relative", [DEFAULT_TRAIN_RECIPE, "recipes/tiny-qwen3/lora_sft.yaml", "recipes/qwen3-8b/lora_sft_walkthrough.yaml"]
)
def test_the_form_holds_the_recipe(relative):
    args = recipe_args(relative)
    values = form_values(args, ROOT / relative, ship_deepspeed(args))
    assert values["top.model_name"] == model_label(ROOT / relative)
    assert values["top.model_path"] == args["model_name_or_path"] and values["top.template"] == "qwen3"
    assert values["train.dataset"] == args["dataset"].split(",") and values["train.dataset_dir"] == "."
    assert values["train.learning_rate"] == str(args["learning_rate"])
    assert (values["train.batch_size"], values["train.gradient_accumulation_steps"]) == (
        args["per_device_train_batch_size"],
        args["gradient_accumulation_steps"],
    )
    assert (values["train.lora_rank"], values["train.lora_alpha"], values["train.lora_dropout"], values["train.lora_target"]) == (
        args["lora_rank"],
        args["lora_alpha"],
        args["lora_dropout"],
        args["lora_target"],
    )
    assert values["train.output_dir"] == args["output_dir"] and values["train.cutoff_len"] == args["cutoff_len"]
    assert values["train.ds_stage"] == ("2" if args.get("deepspeed") else "none")
    extra = json.loads(values["train.extra_args"])
    assert extra["max_samples"] is None and "learning_rate" not in extra  # no cap on rows; form fields stay fields


@pytest.mark.lf
@pytest.mark.parametrize("relative", [DEFAULT_TRAIN_RECIPE, "recipes/tiny-qwen3/lora_sft.yaml"])
def test_the_webuis_own_command_builder_gives_the_recipe(relative, tmp_path, monkeypatch):
    """LLaMA-Factory's form and its Runner turn the saved arguments into the same command as the recipe."""
    import gradio as gr
    import llamafactory.webui.common as common
    import llamafactory.webui.runner as runner

    for module in (common, runner):  # runner binds the name at import, possibly before this test
        monkeypatch.setattr(module, "DEFAULT_CACHE_DIR", str(tmp_path / "cache"))
    from llamafactory.webui.common import gen_cmd
    from llamafactory.webui.components import create_top, create_train_tab
    from llamafactory.webui.engine import Engine

    engine = Engine()
    with gr.Blocks():
        engine.manager.add_elems("top", create_top())
        engine.manager.add_elems("train", create_train_tab(engine))
    values = form_values(recipe_args(relative), ROOT / relative, ship_deepspeed(recipe_args(relative)))
    data = {elem: values.get(elem_id, getattr(elem, "value", None)) for elem_id, elem in engine.manager._id_to_elem.items()}
    assert_command_is_the_recipe(command_keys(gen_cmd(engine.runner._parse_train_args(data))), recipe_args(relative))


READ_FORM = """() => Object.fromEntries([...document.querySelectorAll('span[data-testid="block-info"]')]
    .filter(span => span.offsetParent !== null)
    .map(span => { const block = span.closest('.block');
                   const input = block && block.querySelector('input:not([type=range]), textarea');
                   const value = input && (input.type === 'checkbox' ? input.checked : input.value);
                   return [span.textContent.trim(), input ? value : null]; }))"""


@pytest.mark.lf
def test_webui_in_a_real_browser_opens_on_the_recipe(tmp_path):
    """Chromium driven by Playwright: the form shows the recipe, the preview command is the recipe."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright to run the browser test")
    if not CHROMIUM:
        pytest.skip("no Chromium: apt-get install chromium (Playwright's own browser download is not used)")
    port = free_port()
    ui = start_caretune(ROOT, "webui", "--port", port)
    args = recipe_args(DEFAULT_TRAIN_RECIPE)
    screenshot = tmp_path / "webui.png"
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            deadline = time.monotonic() + 180
            while True:
                assert ui.poll() is None, ui.stdout.read()[-3000:]
                try:
                    page.goto(f"http://127.0.0.1:{port}/")
                    break
                except sync_api.Error:
                    assert time.monotonic() < deadline, "the WebUI did not answer"
                    time.sleep(1)
            page.wait_for_function(
                "path => [...document.querySelectorAll('textarea')].some(t => t.value === path)",
                arg=args["model_name_or_path"],
                timeout=60_000,
            )
            page.wait_for_timeout(1500)  # the model name's change event sets the path and template once more
            form = page.evaluate(READ_FORM)
            datasets = page.locator(".block:has(span[data-testid='block-info']:text-is('Dataset')) .token").all_inner_texts()
            page.screenshot(path=str(screenshot))
            page.get_by_role("button", name="Preview command").first.click()
            page.wait_for_function(
                "() => [...document.querySelectorAll('code')].some(c => c.innerText.includes('--stage'))", timeout=30_000
            )
            preview = next(text for text in page.locator("code").all_inner_texts() if "--stage" in text)
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    expected = {
        "Model name": model_label(ROOT / DEFAULT_TRAIN_RECIPE),
        "Model path": args["model_name_or_path"],
        "Chat template": args["template"],
        "Data dir": ".",
        "Learning rate": str(args["learning_rate"]),
        "Epochs": str(args["num_train_epochs"]),
        "Cutoff length": str(args["cutoff_len"]),
        "Batch size": str(args["per_device_train_batch_size"]),
        "Gradient accumulation": str(args["gradient_accumulation_steps"]),
        "DeepSpeed stage": "2",
        "Output dir": args["output_dir"],
        "Compute type": "bf16",
        "Booster": "liger_kernel",
    }
    assert {label: form.get(label) for label in expected} == expected
    assert datasets == args["dataset"].split(",")
    assert_command_is_the_recipe(command_keys(preview), args)
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("CARETUNE_SCREENSHOT"):  # how recipes/qwen3-8b/webui.png is made
        shutil.copy(screenshot, Path(os.environ["CARETUNE_SCREENSHOT"]))


def test_a_recipe_the_webui_cannot_show_is_one_line(tmp_path):
    (tmp_path / "no-model.yaml").write_text("stage: sft\ndataset: multi-med\n", encoding="utf-8")
    (tmp_path / "bad.json").write_text('{"zero_optimization": {"stage": 2,}}', encoding="utf-8")
    (tmp_path / "bad-ds.yaml").write_text("model_name_or_path: x\nstage: sft\ndeepspeed: bad.json\n", encoding="utf-8")
    for recipe, expected in (
        ("no-model.yaml", "no-model.yaml: no model_name_or_path"),
        ("bad-ds.yaml", "bad.json:1: not valid JSON"),
    ):
        done = run_caretune(tmp_path, "webui", recipe, "--port", free_port(), timeout=60)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1].startswith("Error: ") and expected in done.stderr, done.stderr
