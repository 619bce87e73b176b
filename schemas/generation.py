"""Greedy two-turn generation with transformers: the reference engine of the worker, and how training evaluates a
checkpoint (one implementation for both, so evaluation scores what serving would answer)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from schemas.messages import TelemetrySample
from schemas.model_io import build_inputs, load_model, load_processor
from schemas.prompts import (
    PROMPT_VERSION,
    PROMPT_VERSIONS,
    TURN1_JSON_SEPARATORS,
    Prompt,
    conversation,
    turn1_json_schema,
)

DEFAULT_MAX_NEW_TOKENS = 256

Telemetry = Sequence[TelemetrySample]  # one clip's samples, t from the clip start; empty: none


@dataclass(frozen=True)
class CotOutput:
    turn1: str
    turn2: str
    prompt_tokens: int  # both turns' prompts, video tokens included
    generated_tokens: int  # both turns
    latency_ms: float  # both turns, input building included
    prompt_version: str = PROMPT_VERSION  # the prompt version the engine asked in (schemas.prompts)


def clip_prompts(
    clips: Sequence[np.ndarray], telemetry: Sequence[Telemetry] | None, version: str
) -> list[Prompt]:
    """Each clip's prompt in `version` from its telemetry (None: no clip has any); what every engine renders."""
    if telemetry is None:
        return [Prompt.for_clip((), version)] * len(clips)
    if len(telemetry) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(telemetry)} telemetry lists")
    return [Prompt.for_clip(samples, version) for samples in telemetry]


def prompt_version_of(path: str | Path, default: str = PROMPT_VERSION) -> str:
    """The prompt version a checkpoint was fine-tuned in (`drivecoach.json`'s `prompt_version`), so it is asked as it
    learned; `default` for a checkpoint that names none (a base model, a hub id)."""
    meta = Path(path) / "drivecoach.json"
    if meta.is_file():
        version = json.loads(meta.read_text()).get("prompt_version")
        if isinstance(version, str) and version in PROMPT_VERSIONS:
            return version
    return default


def engine_prompt_version(model_path: str | Path, prompt_version: str | None) -> str:
    """The version an engine asks in: the one given, else the checkpoint's own (`prompt_version_of`)."""
    version = prompt_version if prompt_version is not None else prompt_version_of(model_path)
    Prompt(version)  # an unknown version fails here, when the engine starts
    return version


def model_version_of(path: str | Path) -> str:
    """`<dir name>-<8 hex>`: the hash of drivecoach.json (fine-tuned) or config.json + weights index (base); a hub id
    that is not a local directory is its own version (`org--name`)."""
    if not Path(path).exists():
        return str(path).replace("/", "--")
    path = Path(path)
    h = hashlib.sha256()
    meta = path / "drivecoach.json"
    if meta.is_file():
        h.update(meta.read_bytes())
    else:
        for name in ("config.json", "model.safetensors.index.json", "tiny_model.json"):
            if (path / name).is_file():
                h.update((path / name).read_bytes())
    return f"{path.resolve().name}-{h.hexdigest()[:8]}"


class TransformersEngine:
    """Greedy two-turn generation with transformers on CPU (or wherever the model sits)."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        threads: int | None = None,
        constrained: bool = True,
        prompt_version: str | None = None,  # None: the checkpoint's own (prompt_version_of)
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        path = Path(model_path)
        if (path.exists() or not is_hub_id(str(model_path))) and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model directory (no config.json)")
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.path = path
        self.max_new_tokens = max_new_tokens
        source = path if path.exists() else str(model_path)  # not a local directory: a hub id
        self.processor: Any = load_processor(source)
        self.model: Any = load_model(source)
        self.model_version = model_version_of(model_path)
        self.prompt_version = engine_prompt_version(model_path, prompt_version)
        tok = self.processor.tokenizer
        self._eos = [i for i in {tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id} if i is not None]
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else self._eos[0]
        self._turn1_grammar = self._compile_turn1_grammar() if constrained else None

    def _compile_turn1_grammar(self) -> Any:
        """Turn 1's JSON grammar, compiled exactly as vLLM's xgrammar backend compiles it (no free whitespace,
        compact separators), so constrained greedy decoding matches token for token."""
        import xgrammar

        vocab = int(self.model.get_output_embeddings().weight.shape[0])
        info = xgrammar.TokenizerInfo.from_huggingface(self.processor.tokenizer, vocab_size=vocab)
        return xgrammar.GrammarCompiler(info).compile_json_schema(
            json.dumps(turn1_json_schema()), any_whitespace=False, separators=TURN1_JSON_SEPARATORS
        )

    def _generate(
        self, messages: list[dict[str, Any]], frames: np.ndarray, grammar: Any = None
    ) -> tuple[str, int, int]:
        import torch

        inputs = build_inputs(self.processor, messages, frames, add_generation_prompt=True)
        prompt_len = int(inputs["input_ids"].shape[1])
        constraint: list[Any] = []
        if grammar is not None:
            from xgrammar.contrib.hf import LogitsProcessor

            constraint = [LogitsProcessor(grammar)]  # stateful: one per generation
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                eos_token_id=self._eos,
                pad_token_id=self._pad,
                logits_processor=constraint,
            )
        new = out[0, prompt_len:]
        text = self.processor.tokenizer.decode(new, skip_special_tokens=True)
        return text.strip(), prompt_len, int(new.shape[0])

    def run_cot(self, frames: np.ndarray, telemetry: Telemetry = ()) -> CotOutput:
        """Both turns on one clip; its telemetry (t from the clip start) goes into turn 1 from cot-v2 on."""
        return self._cot(frames, Prompt.for_clip(telemetry, self.prompt_version))

    def _cot(self, frames: np.ndarray, prompt: Prompt) -> CotOutput:
        started = time.perf_counter()
        turn1, p1, g1 = self._generate(conversation(prompt=prompt), frames, self._turn1_grammar)
        turn2, p2, g2 = self._generate(conversation(turn1, prompt=prompt), frames)
        return CotOutput(
            turn1=turn1,
            turn2=turn2,
            prompt_tokens=p1 + p2,
            generated_tokens=g1 + g2,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            prompt_version=prompt.version,
        )

    def run_batch(
        self, clips: list[np.ndarray], telemetry: Sequence[Telemetry] | None = None
    ) -> list[CotOutput]:
        """One clip after another: the reference engine; padding a batch would change its numerics. `telemetry`:
        each clip's samples (None: none for any)."""
        prompts = clip_prompts(clips, telemetry, self.prompt_version)
        return [self._cot(frames, prompt) for frames, prompt in zip(clips, prompts, strict=True)]


def is_hub_id(name: str) -> bool:
    """`org/name` or `name` on the Hugging Face hub, as opposed to a filesystem path."""
    return not Path(name).is_absolute() and not name.startswith((".", "~")) and name.count("/") <= 1


def is_demo_model(path: str | Path) -> bool:
    """True for the tiny DEMO models built here (their metadata says so); they must be labelled wherever shown."""
    for name in ("drivecoach.json", "tiny_model.json"):
        meta = Path(path) / name
        if meta.is_file():
            return bool(json.loads(meta.read_text()).get("demo", False))
    return False
