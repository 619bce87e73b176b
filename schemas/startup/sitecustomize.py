"""Run at start-up by every Python process that has this directory on PYTHONPATH (vLLM's engine and model-inspection
subprocesses, a `vllm serve` server): puts the torchvision shim in place before anything imports torchvision, and
makes the process die with its parent.

Why the shim: on CPU hosts, PyPI's torchvision cannot load beside torch 2.13.0+cpu (schemas/model_io.py explains),
and vLLM starts fresh interpreters that import transformers -> torchvision before any drivecoach code runs. A no-op
where the real torchvision extension loads (GPU hosts).

Why the parent-death signal: vLLM's engine core ignores the death of the process that started it, so a worker (or a
test) killed with SIGKILL left its EngineCore and model workers running, a core pinned each, for hours. With
DRIVECOACH_DIE_WITH_PARENT=1 (set with this directory by `streams.inference.engines.vllm.with_startup_shim`) the
kernel sends each such process SIGTERM when its parent dies, and vLLM shuts down on SIGTERM. The call is the one
`streams.infra.processes.die_with_parent` makes, repeated here because nothing of drivecoach is imported yet.
"""

import os
import signal
import sys

from schemas.model_io import install_torchvision_shim

if os.environ.get("DRIVECOACH_DIE_WITH_PARENT") == "1" and sys.platform.startswith("linux"):
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG (linux/prctl.h)

install_torchvision_shim()
