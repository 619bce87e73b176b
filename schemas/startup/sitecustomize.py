"""Run at start-up by every Python process that has this directory on PYTHONPATH (vLLM's engine and model-inspection
subprocesses, a `vllm serve` server): puts the torchvision shim in place before anything imports torchvision.

Why: on CPU hosts, PyPI's torchvision cannot load beside torch 2.13.0+cpu (schemas/model_io.py explains), and vLLM
starts fresh interpreters that import transformers -> torchvision before any drivecoach code runs. A no-op where the
real torchvision extension loads (GPU hosts).
"""

from schemas.model_io import install_torchvision_shim

install_torchvision_shim()
