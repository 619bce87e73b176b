"""The configured engine, built from the settings: imports only what that engine needs (vLLM is heavy)."""

from __future__ import annotations

from schemas.generation import TransformersEngine
from streams.inference.engines.base import Engine
from streams.settings import Settings


def load_engine(settings: Settings, model_path: str) -> Engine:
    if settings.engine == "vllm":
        from streams.inference.engines.vllm import VllmEngine

        return VllmEngine(
            model_path,
            max_new_tokens=settings.max_new_tokens,
            max_model_len=settings.vllm_max_model_len,
            dtype=settings.vllm_dtype,
            enforce_eager=settings.vllm_enforce_eager,
        )
    if settings.engine == "openai":
        from streams.inference.engines.openai import OpenAIEngine

        return OpenAIEngine(
            settings.openai_base_url,
            model_path,
            max_new_tokens=settings.max_new_tokens,
            api_key=settings.openai_api_key or None,
            concurrency=settings.max_in_flight,
        )
    return TransformersEngine(model_path, max_new_tokens=settings.max_new_tokens)
