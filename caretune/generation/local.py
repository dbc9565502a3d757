"""Generation on a recipe's model with a stop switch: a time limit, a client that goes away or a shutdown stops
the work at the next token. The model, adapter and chat template are LLaMA-Factory's (caretune.lf.chat_engine)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from caretune.generation.think_blocks import strip_think

STOP, LENGTH, CANCELLED = "stop", "length", "cancelled"
MEASURED_PROMPT_TOKENS = 256  # prompts at least this long update the prefill rate


@dataclass(frozen=True)
class Sampling:
    """What one request asks of the model; None means the recipe's value."""

    max_new_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    seed: int | None = None  # sampling starts from it: the same request and seed give the same answer


@dataclass(frozen=True)
class Completion:
    text: str  # `<think>` blocks removed
    tokens: int  # generated tokens, the end-of-turn token included
    finish_reason: str  # STOP (end of turn), LENGTH (max_new_tokens) or CANCELLED (the stop switch)


class LocalGenerator:
    """The recipe's model, one generation at a time (callers serialise; caretune.serving.api.gate does)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.stop_ids = set(engine.template.get_stop_token_ids(engine.tokenizer))
        config = engine.model.config
        self.context_length: int | None = getattr(config, "max_position_embeddings", None)
        self.prefill_tokens_per_s: float | None = None  # measured: prompt tokens / time to the first new token
        # the most bytes one token covers: a text of B bytes is at least B / max_token_bytes tokens
        self.max_token_bytes = max(len(self.tokenizer.convert_tokens_to_string([t]).encode()) for t in self.tokenizer.get_vocab())
        self.exchange_tokens = self.fewest_exchange_tokens()

    def fewest_exchange_tokens(self) -> int:
        """The tokens an earlier answer and the question after it add besides the question's text (at least): the
        answer left empty, since the template strips a history answer's think block and leading newlines."""
        one = [{"role": "user", "content": "a"}]
        three = [*one, {"role": "assistant", "content": ""}, *one]
        return max(0, len(self.prompt_ids(three, None)) - len(self.prompt_ids(one, None)) - 1)

    def record_prefill(self, prompt_tokens: int, seconds: float) -> None:
        """Update the prefill rate from one request (long prompts only: short ones measure overhead)."""
        if prompt_tokens >= MEASURED_PROMPT_TOKENS and seconds > 0:
            rate = prompt_tokens / seconds
            previous = self.prefill_tokens_per_s
            self.prefill_tokens_per_s = rate if previous is None else 0.5 * previous + 0.5 * rate

    def prompt_ids(self, messages: list[dict[str, str]], system: str | None) -> list[int]:
        """The chat template's prompt for `messages` (user/assistant turns, ending with the user's);
        `system=None` gives the recipe's default_system."""
        turns = [*messages, {"role": "assistant", "content": ""}]
        return self.engine.template.encode_oneturn(self.tokenizer, turns, system, None)[0]

    def generation_config(self, sampling: Sampling):
        """The recipe's generation settings with the request's on top (n > 1 samples; greedy drops sampling keys)."""
        from transformers import GenerationConfig

        config = {k: v for k, v in self.engine.generating_args.items() if hasattr(GenerationConfig(), k)}
        config.pop("max_length", None)
        if sampling.temperature is not None:
            config["temperature"] = sampling.temperature
            config["do_sample"] = sampling.temperature > 0
        if sampling.top_p is not None:
            config["top_p"] = sampling.top_p
        if sampling.n > 1:  # several different answers need sampling
            config["do_sample"] = True
            config["temperature"] = config.get("temperature") or 1.0
        if not config.get("do_sample"):
            config.pop("temperature", None)
            config.pop("top_p", None)
            config.pop("top_k", None)
        config.update(
            max_new_tokens=sampling.max_new_tokens,
            num_return_sequences=sampling.n,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return GenerationConfig(**config)

    def generate(
        self,
        prompt_ids: list[int],
        sampling: Sampling,
        should_stop: Callable[[], bool],
        on_text: Callable[[str], None] | None = None,
    ) -> list[Completion]:
        """`sampling.n` completions; `on_text` receives the decoded text as it is generated (n == 1 only).
        `should_stop` is asked after every token; when it says yes, the completions end as CANCELLED."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextStreamer

        started = time.monotonic()
        generator = self

        class Switch(StoppingCriteria):
            fired = False
            first = True

            def __call__(self, input_ids, scores, **kwargs):
                if self.first:  # called once the first new token exists: the prompt has been read
                    self.first = False
                    generator.record_prefill(len(prompt_ids), time.monotonic() - started)
                self.fired = self.fired or bool(should_stop())
                return torch.full((input_ids.shape[0],), self.fired, dtype=torch.bool, device=input_ids.device)

        class Relay(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    on_text(text)

        model = self.engine.model
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)  # generations run one at a time, so the global generator is this request's
        inputs = torch.tensor([prompt_ids], device=model.device)
        switch = Switch()
        streamer = Relay(self.tokenizer, skip_prompt=True, skip_special_tokens=True) if on_text else None
        with torch.inference_mode():
            output = model.generate(
                inputs=inputs,
                attention_mask=torch.ones_like(inputs),
                generation_config=self.generation_config(sampling),
                stopping_criteria=StoppingCriteriaList([switch]),
                streamer=streamer,
            )
        completions = []
        for row in output[:, len(prompt_ids) :].tolist():
            end = next((i for i, token in enumerate(row) if token in self.stop_ids), None)
            kept = row if end is None else row[: end + 1]
            reason = STOP if end is not None else CANCELLED if switch.fired else LENGTH
            text = self.tokenizer.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=True)
            completions.append(Completion(strip_think(text), len(kept), reason))
        return completions
