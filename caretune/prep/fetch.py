"""`caretune fetch`: download the raw datasets with the hubs' own client libraries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from caretune.basics.errors import UserError
from caretune.hub import MODELSCOPE_ENDPOINT, hf_endpoint, hf_offline, reachable


@dataclass(frozen=True)
class RawDataset:
    repo_id: str
    file_name: str
    page: str


RAW_DATASETS = {
    "chatmed": RawDataset(
        "michaelwzhu/ChatMed_Consult_Dataset",
        "ChatMed_Consult-v0.3.json",
        "https://huggingface.co/datasets/michaelwzhu/ChatMed_Consult_Dataset",
    ),
    "huatuo": RawDataset(
        "FreedomIntelligence/HuatuoGPT2-SFT-GPT4-140K",
        "HuatuoGPT2-GPT4-SFT-140K.json",
        "https://huggingface.co/datasets/FreedomIntelligence/HuatuoGPT2-SFT-GPT4-140K",
    ),
    # general Chinese multi-turn conversations (38,535 rows, CC BY 4.0 per its card): mixed in against forgetting
    "general": RawDataset(
        "shibing624/sharegpt_gpt4",
        "sharegpt_zh_38K_format.jsonl",
        "https://huggingface.co/datasets/shibing624/sharegpt_gpt4",
    ),
    # medical preference pairs: 4,000 questions, a doctor's answer chosen over a model's (Apache-2.0 per its card)
    "prefs": RawDataset(
        "shibing624/medical",
        "reward/train.json",
        "https://huggingface.co/datasets/shibing624/medical",
    ),
}


def manual_instructions(dataset: str, dest: str | Path) -> str:
    """Where to download a dataset by hand and where to put it, for machines without the hub."""
    raw = RAW_DATASETS[dataset]
    target = Path(dest) / raw.file_name
    return (
        f"download {raw.file_name} from {raw.page} (or the same dataset on ModelScope) by hand, "
        f"place it at {target}, then run: caretune convert {dataset} {target}"
    )


def fetch_raw(dataset: str, source: str, dest: str | Path) -> Path:
    """Download `dataset`'s raw file into `dest` and return its path; fail fast when offline."""
    raw = RAW_DATASETS[dataset]
    if source == "hf":
        if hf_offline():
            raise UserError(f"HF_HUB_OFFLINE is set; {manual_instructions(dataset, dest)}")
        if not reachable(hf_endpoint()):
            raise UserError(f"{hf_endpoint()} is unreachable; {manual_instructions(dataset, dest)}")
        from huggingface_hub import hf_hub_download

        Path(dest).mkdir(parents=True, exist_ok=True)
        try:
            return Path(hf_hub_download(raw.repo_id, raw.file_name, repo_type="dataset", local_dir=dest))
        except Exception as err:  # the hub client raises many kinds; all end the same way for the user
            raise UserError(f"download failed ({type(err).__name__}: {err}); {manual_instructions(dataset, dest)}") from None
    if not reachable(MODELSCOPE_ENDPOINT):
        raise UserError(f"{MODELSCOPE_ENDPOINT} is unreachable; {manual_instructions(dataset, dest)}")
    try:
        from modelscope.hub.file_download import dataset_file_download
    except ImportError:
        raise UserError("ModelScope downloads need `pip install modelscope`") from None
    Path(dest).mkdir(parents=True, exist_ok=True)
    try:
        return Path(dataset_file_download(raw.repo_id, raw.file_name, local_dir=str(dest)))
    except Exception as err:
        raise UserError(f"download failed ({type(err).__name__}: {err}); {manual_instructions(dataset, dest)}") from None
