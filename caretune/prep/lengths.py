"""Token lengths of a registered dataset, tokenized once and cached for `caretune check` and `caretune plan`.

A dataset goes through LLaMA-Factory's own loading and alignment, then its chat template encodes every
row's (prompt, answer) turns untruncated, as its SFT preprocessing does. What is kept per row is the token
count of each turn; the length at any cutoff is LLaMA-Factory's truncation replayed on those counts
(`truncated_length`, tested against its preprocessing). So check (no cutoff) and plan (the recipe's cutoff,
packed or not) share one pass.

The cache lives in `<dataset_dir>/.cache/lengths/`, one `.npz` per dataset and key. The key covers the
data file's content (SHA-256), its registry entry (the layout), the tokenizer (its serialized vocabulary
and chat template), the template and its options, and the LLaMA-Factory version; any change computes anew.
Files are written to a temporary name and renamed, so concurrent runs at worst compute twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caretune import lf
from caretune.constants import DATASET_INFO

CACHE_DIR = Path(".cache") / "lengths"
FORMAT = 4  # bump when the stored arrays change meaning
DROPPED = -1  # turns of a row LLaMA-Factory drops (not one answer after an odd number of messages)
PARALLEL_TOKENIZE_BYTES = 20 << 20  # smaller files are tokenized in this process


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil without floats drifting
    return sorted_values[int(rank) - 1]


def tokenizer_processes(recipe_workers: int | None, data_bytes: int) -> int | None:
    """Processes for tokenizing here: the recipe's, capped by this machine's cores, and none for small files
    (starting workers costs more than it saves); the figures do not depend on it."""
    cores = os.cpu_count() or 1
    return min(recipe_workers, cores) if recipe_workers and cores > 1 and data_bytes > PARALLEL_TOKENIZE_BYTES else None


def dataset_bytes(dataset_dir: str, name: str) -> int:
    """Size of a registered dataset's local file (0 when it is not one; LLaMA-Factory reports the problem later)."""
    from caretune.basics.registry import RegistryError, load_registry

    try:
        entry = load_registry(Path(dataset_dir) / DATASET_INFO).get(name, {})
        return (Path(dataset_dir) / entry["file_name"]).stat().st_size
    except (RegistryError, OSError, KeyError, TypeError, AttributeError):
        return 0


@dataclass(frozen=True)
class TurnLengths:
    """Per row of one dataset: the token counts of its encoded turns, untruncated."""

    rows: int  # rows in the dataset (or its first `max_samples`)
    turns: np.ndarray  # turns per tokenized row, DROPPED for rows preprocessing drops
    pairs: np.ndarray  # (source, target, think) tokens of every turn, rows one after another; see _TurnEncoder
    prefix: int  # tokens before the first turn (multimodal prefix; 0 for text)
    efficient_eos: bool  # the template appends one EOS token after the last turn
    care: dict | None  # the care rules over every row (converters.care.CareTally.as_dict), when asked for
    ranking: bool = False  # preference pairs: one (prompt, chosen, rejected) triple a row, as the pairwise processor encodes

    @property
    def tokenized(self) -> int:
        """Rows tokenized."""
        return len(self.turns)

    def lengths(self, cutoff_len: int, mask_history: bool = False, preserve_thinking: bool = False) -> list[int]:
        """Token length of every kept row at `cutoff_len`, in dataset order, as LLaMA-Factory truncates. Under
        `mask_history` (without `preserve_thinking`) the history turns lose their empty think block, as LLaMA-Factory
        encodes them then."""
        if self.ranking:
            return [prompt + max(chosen, rejected) for prompt, chosen, rejected in self.pair_lengths(cutoff_len)]
        discard = mask_history and not preserve_thinking
        result = []
        start = 0
        for turns in self.turns.tolist():
            if turns == DROPPED:
                continue
            triples = self.pairs[start : start + turns].tolist()
            start += turns
            last = len(triples) - 1
            pairs = [(s - (k if discard and i < last else 0), t) for i, (s, t, k) in enumerate(triples)]
            result.append(truncated_length(pairs, cutoff_len, self.prefix, self.efficient_eos, mask_history))
        return result

    def pair_lengths(self, cutoff_len: int) -> list[tuple[int, int, int]]:
        """Preference pairs: (prompt, chosen, rejected) tokens of every kept row at `cutoff_len`, as LLaMA-Factory's
        pairwise processor truncates them (the prompt and both answers to one `infer_seqlen` budget, the longer answer's)."""
        result = []
        for prompt, chosen, rejected in self.pairs.tolist():  # dropped rows have no triple
            eos = 1 if self.efficient_eos else 0
            kept_prompt, kept_answer = lf.infer_seqlen(prompt, max(chosen, rejected) + eos, cutoff_len)
            result.append((kept_prompt, min(chosen + eos, kept_answer), min(rejected + eos, kept_answer)))
        return result


def truncated_length(
    pairs: list[list[int]], cutoff_len: int, prefix: int = 0, efficient_eos: bool = False, mask_history: bool = False
) -> int:
    """The length of one row after LLaMA-Factory's SFT truncation (`_encode_data_example`), from its turns'
    (source, target) token counts."""
    total = prefix + (1 if efficient_eos else 0)
    if total + sum(s + t for s, t in pairs) <= cutoff_len:  # nothing to cut: the common case, without the loop
        return total + sum(s + t for s, t in pairs)
    for source, target in pairs[::-1] if mask_history else pairs:
        if total >= cutoff_len:
            break
        source, target = lf.infer_seqlen(source, target, cutoff_len - total)
        total += source + target
    return total


class TokenizerSource:
    """A model's Qwen3 tokenizer, loaded only when rows must be tokenized. Its identity is the SHA-256 of the
    files it loads from (vocabulary, merges, chat template), read without loading it where they are local."""

    TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.jinja")

    def __init__(self, model_name_or_path: str | None, log=None):
        self.model_name_or_path, self.log = model_name_or_path, log
        self._tokenizer = None
        self._identity = None

    def load(self):
        """The tokenizer, loaded once (the real Qwen3 tokenizer for the model, offline when it must be)."""
        if self._tokenizer is None:
            from caretune.prep.tokenizer import load_qwen3_tokenizer

            self._tokenizer, source = load_qwen3_tokenizer(self.model_name_or_path)
            if self.log:
                self.log(f"tokenizer: {source}")
        return self._tokenizer

    def identity(self) -> str:
        """A hash of the tokenizer's files: cached lengths are reused only for the same tokenizer."""
        if self._identity is None:
            from caretune.basics.files import sha256_file
            from caretune.prep.tokenizer import tokenizer_files

            folder = tokenizer_files(self.model_name_or_path)
            if folder is None:  # not on this machine yet: loading fetches it
                self.load()
                folder = tokenizer_files(self.model_name_or_path)
            digest = hashlib.sha256()
            for file_name in self.TOKENIZER_FILES:
                if folder is not None and (folder / file_name).is_file():
                    digest.update(file_name.encode() + b"\0" + sha256_file(folder / file_name).encode())
            self._identity = digest.hexdigest()
        return self._identity


def cache_key(name: str, dataset_dir: str, tokenizer_id: str, data_kwargs: dict) -> str | None:
    """The cache key of a registered dataset, or None when it is not one local file."""
    from importlib.metadata import version

    from caretune.basics.files import sha256_file
    from caretune.basics.registry import RegistryError, load_registry

    try:
        entry = load_registry(Path(dataset_dir) / DATASET_INFO)[name]
        data_file = Path(dataset_dir) / entry["file_name"]
    except (RegistryError, KeyError, TypeError):
        return None
    if not data_file.is_file():
        return None
    parts = {
        "format": FORMAT,
        "llamafactory": version("llamafactory"),
        "entry": entry,
        "data": sha256_file(data_file),
        "tokenizer": tokenizer_id,
        "options": data_kwargs,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def _cache_path(dataset_dir: str, name: str, key: str) -> Path:
    return Path(dataset_dir) / CACHE_DIR / f"{name}-{key}.npz"


def _warn(text: str) -> None:
    print(f"caretune: {text}", file=sys.stderr)


def _load(path: Path, warn) -> TurnLengths | None:
    """A cache entry, or None when there is none or it cannot be read (said through `warn`: it is only a cache)."""
    if not path.exists():
        return None
    try:
        with np.load(path) as stored:
            meta = json.loads(str(stored["meta"]))
            return TurnLengths(
                rows=meta["rows"],
                turns=stored["turns"],
                pairs=stored["pairs"],
                prefix=meta["prefix"],
                efficient_eos=meta["efficient_eos"],
                care=meta["care"],
                ranking=meta["ranking"],
            )
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        warn(f"{path}: unreadable token-length cache ({type(err).__name__}); computing anew (--no-cache skips the cache)")
        return None


def _save(path: Path, name: str, data: TurnLengths, warn) -> None:
    """Write a cache entry and remove the dataset's entries under other keys; a cache that cannot be written is
    said through `warn`, never an error (the figures are computed either way)."""
    from caretune.basics.files import AtomicFile

    meta = json.dumps(
        {"rows": data.rows, "prefix": data.prefix, "efficient_eos": data.efficient_eos, "care": data.care, "ranking": data.ranking}
    )
    try:
        with AtomicFile(path) as out:
            np.savez(out.handle, turns=data.turns, pairs=data.pairs, meta=np.array(meta))
            out.commit()
    except OSError as err:
        warn(f"{path.parent}: cannot write the token-length cache ({err.strerror or err}); not cached (--no-cache skips it)")
        return
    entry = re.compile(rf"{re.escape(name)}-[0-9a-f]{{32}}\.npz")
    for old in path.parent.iterdir():
        if old != path and entry.fullmatch(old.name):
            old.unlink(missing_ok=True)


@dataclass(frozen=True)
class LengthRequest:
    """How turn_lengths reads a dataset: the recipe's template and thinking mode (`mask_history` keys a thinking-mode
    entry: history answers may lose thought text there), only the first `max_samples` rows (as LLaMA-Factory
    reads them), or a seeded random `sample` of them (every row still counted); worker processes, the care tally,
    and the cache."""

    template: str
    enable_thinking: bool = False
    mask_history: bool = False
    max_samples: int | None = None
    sample: int | None = None
    seed: int = 0
    num_proc: int | None = None
    with_care: bool = False
    use_cache: bool = True


def turn_lengths(
    name: str, dataset_dir: str, tokenizer: TokenizerSource, scratch: str, request: LengthRequest, *, log=None, warn=_warn
) -> TurnLengths:
    """One registered dataset's turn lengths: from the cache when its key matches, else computed (and cached, when
    the whole dataset was tokenized)."""
    whole = request.max_samples is None and request.sample is None
    # Non-thinking (the recipes' mode): one pass serves every mask_history, the history turns' think blocks counted
    # apart (so check and plan share an entry). Thinking: history answers may lose thought text, so it is keyed too.
    options = {"template": request.template, "enable_thinking": request.enable_thinking}
    if request.enable_thinking:
        options["mask_history"] = request.mask_history
    key = cache_key(name, dataset_dir, tokenizer.identity(), options) if whole and request.use_cache else None
    if key:
        cached = _load(_cache_path(dataset_dir, name, key), warn)
        if cached is not None and (cached.care is not None or not request.with_care):
            if log:
                log(f"{name}: token lengths from the cache ({CACHE_DIR}/{name}-{key[:8]}…)")
            return cached
    from caretune.constants import BASE_MODEL

    data = _compute(
        name,
        dataset_dir,
        tokenizer.load(),
        tokenizer.model_name_or_path or BASE_MODEL,
        scratch,
        template_options=options,
        max_samples=request.max_samples,
        sample=request.sample,
        seed=request.seed,
        num_proc=request.num_proc,
        with_care=True if key else request.with_care,
    )
    if key:
        _save(_cache_path(dataset_dir, name, key), name, data, warn)
    return data


class _TurnEncoder:
    """The per-batch function of `datasets.map`: each row's turns encoded by the chat template, as
    LLaMA-Factory's supervised processor encodes them (a picklable object, for worker processes).

    Each turn is (source, target, think). In non-thinking mode every turn is encoded as a trained turn (its prompt
    ending in the empty think block, when its answer holds no thought tag: the template's own rule) and `think` is that
    block's length, which the history turns lose under mask_history; in thinking mode the encoding is mask_history's
    own and `think` is 0."""

    def __init__(self, template, tokenizer, discard_history_cot: bool, enable_thinking: bool, ranking: bool = False):
        self.template, self.tokenizer, self.ranking = template, tokenizer, ranking
        self.discard_history_cot = discard_history_cot and enable_thinking
        self.derive_think = not enable_thinking and hasattr(template, "get_thought_word_ids")
        self.think = len(template.get_thought_word_ids(tokenizer)) if self.derive_think else 0

    def _think(self, answer: str) -> int:
        """The empty think block's length where the template adds one before this answer, else 0."""
        content = self.template.remove_thought(answer)
        tags = (word.strip() for word in self.template.thought_words)
        return 0 if any(tag in content for tag in tags) else self.think

    def _pair(self, prompt: list[dict], response: list[dict], system, tools) -> list[int]:
        """A preference row as LLaMA-Factory's pairwise processor encodes it: (prompt, chosen, rejected) tokens."""
        prompt_ids, chosen_ids = self.template.encode_oneturn(self.tokenizer, prompt + response[:1], system, tools)
        _, rejected_ids = self.template.encode_oneturn(self.tokenizer, prompt + response[1:2], system, tools)
        return [len(prompt_ids), len(chosen_ids), len(rejected_ids)]

    def __call__(self, batch: dict) -> dict:
        encoded = []
        for prompt, response, system, tools in zip(batch["_prompt"], batch["_response"], batch["_system"], batch["_tools"]):
            if len(prompt) % 2 == 1 and len(response) == 2 and self.ranking:
                encoded.append(self._pair(prompt, response, system, tools))
                continue
            if len(prompt) % 2 != 1 or len(response) != 1 or self.ranking:  # the rows LLaMA-Factory's preprocessing drops
                encoded.append([DROPPED])
                continue
            messages = self.template.mm_plugin.process_messages(prompt + response, [], [], [], None)
            pairs = self.template.encode_multiturn(self.tokenizer, messages, system, tools, self.discard_history_cot)
            answers = [message["content"] for message in messages[1::2]]
            thinks = [self._think(answer) if self.derive_think else 0 for answer in answers]
            encoded.append([n for (source, target), think in zip(pairs, thinks) for n in (len(source), len(target), think)])
        return {"_turn_lengths": encoded}


def _compute(
    name: str,
    dataset_dir: str,
    tokenizer,
    model_name_or_path: str,
    scratch: str,
    *,
    template_options: dict,
    max_samples: int | None,
    sample: int | None,
    seed: int,
    num_proc: int | None,
    with_care: bool,
) -> TurnLengths:
    from datasets.fingerprint import generate_random_fingerprint

    from caretune import lf

    lf.settle_logging()
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        aligned, data_args, _ = lf.load_aligned(
            name,
            dataset_dir,
            model_name_or_path,
            scratch,
            **template_options,
            max_samples=max_samples,
            overwrite_cache=True,
            preprocessing_num_workers=num_proc,
        )
        rows = len(aligned)
        ranking = bool(lf.dataset_attr(name, dataset_dir).ranking)
        care = care_stats(aligned) if with_care else None
        if sample is not None and sample < rows:
            aligned = aligned.shuffle(seed=seed).select(range(sample))
        chat_template = lf.chat_template(tokenizer, data_args)
        prefix_ids, _ = chat_template.mm_plugin.process_token_ids([], [], [], [], [], tokenizer, None)
        encoder = _TurnEncoder(
            chat_template,
            tokenizer,
            data_args.mask_history and not chat_template.preserve_thinking,
            bool(template_options["enable_thinking"]),
            ranking,
        )
        encoded = aligned.map(
            encoder,
            batched=True,
            batch_size=data_args.preprocessing_batch_size,
            remove_columns=aligned.column_names,
            num_proc=num_proc,
            desc="Tokenizing turns",
            # `datasets` would hash the tokenizer to name a cache file (seconds for Qwen3's vocabulary); a scratch load
            # never reuses one, so it gets a random name
            new_fingerprint=generate_random_fingerprint(),
        )
    per_row = encoded["_turn_lengths"]
    turns = np.array([DROPPED if row == [DROPPED] else len(row) // 3 for row in per_row], dtype=np.int32)  # 1 a pair
    flat = [n for row in per_row if row != [DROPPED] for n in row]
    pairs = np.array(flat, dtype=np.int32).reshape(-1, 3)
    return TurnLengths(
        rows=rows,
        turns=turns,
        pairs=pairs,
        prefix=len(prefix_ids),
        efficient_eos=bool(chat_template.efficient_eos),
        care=care,
        ranking=ranking,
    )


def care_stats(aligned) -> dict:
    """Shares of conversations whose answers advise care (also without the verbatim reminder sentences a conversion
    appends: the data's own share), and of urgent questions answered with emergency care. Turn expansion writes one row
    per trained answer, one after another: a row whose next row holds its question and answer as that row's latest
    history is an earlier answer of the same conversation, and the conversation counts at its last row."""
    from converters.care import CareTally, advises_care, apply_care_policy, without_reminders
    from converters.choices import OFF

    tally, own = CareTally(), 0
    rows = list(zip(aligned["_prompt"], aligned["_response"], aligned["_system"]))
    for index, (prompt, response, system) in enumerate(rows):
        following = rows[index + 1][0] if index + 1 < len(rows) else []
        if len(following) >= 3 and following[-3:-1] == [prompt[-1], *response[:1]] and rows[index + 1][2] == system:
            continue  # an earlier answer's row: the conversation's last row counts it
        messages = [*prompt, *response[:1]]
        turns = [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages) - 1, 2)]
        if turns:
            _, _, flags = apply_care_policy(turns, OFF)
            tally.add(flags)
            own += any(advises_care(without_reminders(answer)) for _, answer in turns)
    return {
        **tally.as_dict(),
        "advises_care_without_reminders": own,
        "advises_care_without_reminders_share": round(own / tally.rows, 4) if tally.rows else 0.0,
    }
