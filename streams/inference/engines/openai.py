"""A `vllm serve` server as the engine, through its OpenAI-compatible chat API.

The clip travels as a losslessly encoded video (FFV1 in Matroska, frames exact, 2 FPS in the container) in a
data URL, so the server's own decoder hands the model the very frames the in-process engines see; turn 1 asks for
the taxonomy's JSON schema (`response_format`), which vLLM enforces with the same xgrammar settings
(`vllm_server.serve_args`). Clips are sent as concurrent requests, which the server batches itself.
"""

from __future__ import annotations

import base64
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from schemas.model_io import encode_lossless
from schemas.prompts import SYSTEM_PROMPT, TURN1_QUESTION, TURN2_QUESTION, turn1_json_schema
from streams.inference.engines.base import DEFAULT_MAX_NEW_TOKENS, CotOutput, model_version_of


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
    ) -> None:
        self.model = model  # the name the server serves (`vllm serve <path>` serves it under the path)
        self.max_new_tokens = max_new_tokens
        self.model_version = model_version_of(model)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=2 * concurrency, max_keepalive_connections=2 * concurrency),
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai-engine")

    def _chat(self, video_url: str, turn1: str | None) -> tuple[str, int, int]:
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": video_url}},
                    {"type": "text", "text": TURN1_QUESTION},
                ],
            },
        ]
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0, "max_tokens": self.max_new_tokens}
        if turn1 is None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "turn1", "schema": turn1_json_schema()},
            }
        else:
            messages += [{"role": "assistant", "content": turn1}, {"role": "user", "content": TURN2_QUESTION}]
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

    def _one(self, frames: np.ndarray) -> CotOutput:
        started = time.perf_counter()
        url = "data:video/x-matroska;base64," + base64.b64encode(encode_lossless(frames)).decode()
        turn1, p1, g1 = self._chat(url, None)
        turn2, p2, g2 = self._chat(url, turn1)
        return CotOutput(
            turn1=turn1,
            turn2=turn2,
            prompt_tokens=p1 + p2,
            generated_tokens=g1 + g2,
            latency_ms=(time.perf_counter() - started) * 1000.0,
        )

    def submit(self, frames: np.ndarray) -> Future[CotOutput]:
        """One clip's two turns in a thread of the pool: up to `concurrency` clips in flight, which the server
        batches continuously."""
        return self.pool.submit(self._one, frames)

    def run_batch(self, clips: list[np.ndarray]) -> list[CotOutput]:
        return list(self.pool.map(self._one, clips))

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.http.close()
