"""A `vllm serve` server as the engine, through its OpenAI-compatible chat API.

The clip travels as a losslessly encoded video (FFV1 in Matroska, frames exact, 2 FPS in the container) in a
data URL, so the server's own decoder hands the model the very frames the in-process engines see; turn 1 asks for
the taxonomy's JSON schema (`response_format`), which vLLM enforces with the same xgrammar settings
(`vllm_server.serve_args`). Clips are sent as concurrent requests, which the server batches itself. The messages
are `schemas.prompts.conversation`'s, in the OpenAI format (`openai_messages`), so the server's chat template
renders the very text the in-process engines render.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from schemas.model_io import encode_lossless
from schemas.prompts import Prompt, conversation, text_content, turn1_json_schema
from streams.inference.engines.base import (
    DEFAULT_MAX_NEW_TOKENS,
    CotOutput,
    Telemetry,
    clip_prompts,
    engine_prompt_version,
    model_version_of,
)


def openai_messages(messages: list[dict[str, Any]], video_url: str) -> list[dict[str, Any]]:
    """`conversation`'s messages for the OpenAI chat API: the message with the video as parts (the video as a
    `video_url` part), every other one as a plain string."""
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        if any(item["type"] == "video" for item in content):
            parts = [
                {"type": "video_url", "video_url": {"url": video_url}}
                if item["type"] == "video"
                else {"type": "text", "text": item["text"]}
                for item in content
            ]
            out.append({"role": message["role"], "content": parts})
        else:
            out.append({"role": message["role"], "content": text_content(content, video="")})
    return out


class OpenAIEngine:
    """Greedy two-turn chain of thought against an OpenAI-compatible vLLM server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        api_key: str | None = None,
        timeout_s: float = 600.0,
        concurrency: int = 16,
        prompt_version: str | None = None,  # None: the checkpoint's own, where `model` is a local path
    ) -> None:
        self.model = model  # the name the server serves (`vllm serve <path>` serves it under the path)
        self.max_new_tokens = max_new_tokens
        self.model_version = model_version_of(model)
        self.prompt_version = engine_prompt_version(model, prompt_version)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=2 * concurrency, max_keepalive_connections=2 * concurrency),
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-engine")

    def _chat(self, video_url: str, prompt: Prompt, turn1: str | None) -> tuple[str, int, int]:
        messages = openai_messages(conversation(turn1, prompt=prompt), video_url)
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0, "max_tokens": self.max_new_tokens}
        if turn1 is None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "turn1", "schema": turn1_json_schema()},
            }
        response = self.http.post("/chat/completions", json=body | {"messages": messages})
        if response.status_code != 200:
            raise RuntimeError(f"vLLM server answered {response.status_code}: {response.text[:500]}")
        data = response.json()
        usage = data.get("usage") or {}
        return (
            (data["choices"][0]["message"]["content"] or "").strip(),
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )

    def _one(self, frames: np.ndarray, prompt: Prompt) -> CotOutput:
        started = time.perf_counter()
        url = "data:video/x-matroska;base64," + base64.b64encode(encode_lossless(frames)).decode()
        turn1, p1, g1 = self._chat(url, prompt, None)
        turn2, p2, g2 = self._chat(url, prompt, turn1)
        return CotOutput(
            turn1=turn1,
            turn2=turn2,
            prompt_tokens=p1 + p2,
            generated_tokens=g1 + g2,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            prompt_version=prompt.version,
        )

    def submit(self, frames: np.ndarray, telemetry: Telemetry = ()) -> Future[CotOutput]:
        """One clip's two turns in a thread of the pool: up to `concurrency` clips in flight, which the server
        batches continuously. Its telemetry (t from the clip start) goes into turn 1 from cot-v2 on."""
        return self.pool.submit(self._one, frames, Prompt.for_clip(telemetry, self.prompt_version))

    def run_batch(
        self, clips: list[np.ndarray], telemetry: Sequence[Telemetry] | None = None
    ) -> list[CotOutput]:
        return list(self.pool.map(self._one, clips, clip_prompts(clips, telemetry, self.prompt_version)))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()
