"""Shared Qwen2.5-VL loading and input building for streams (inference) and training (SFT); torch stays lazy."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from transformers import BatchFeature, ProcessorMixin, Qwen2_5_VLForConditionalGeneration

GRID = 28  # patch 14 x spatial merge 2: frame sides must be multiples of this
TEMPORAL_PATCH = 2  # frames per temporal patch
SAMPLE_FPS = 2.0

# torch.library.Library objects unregister their ops when garbage collected: keep it for the process lifetime.
_TORCHVISION_SHIM: Any = None


def install_torchvision_shim() -> bool:
    """Make `import torchvision` work beside a CPU torch whose ABI its C extension does not match.

    transformers' Qwen2VLVideoProcessor requires torchvision; PyPI's torchvision 0.28.0 is a CUDA build whose `_C`
    cannot load beside torch 2.13.0+cpu, and its meta registrations then fail ("operator torchvision::nms does not
    exist"). Defining the two op schemas they expect lets the Python transforms import. Must run before torchvision
    is first imported; a no-op when the real extension loads, when torchvision is already imported, or when run
    twice. Returns True when the shim is in place.
    """
    global _TORCHVISION_SHIM
    if _TORCHVISION_SHIM is not None:
        return True
    if "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return False
    import torch

    if hasattr(torch.ops.torchvision, "nms"):  # registered already (the real extension, or another shim)
        return False
    for lib_path in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(lib_path)
            return False  # a matching build: the real ops are registered
        except OSError:
            break
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SHIM = lib
    return True


def load_processor(path: str | Path) -> ProcessorMixin:
    """The checkpoint's Qwen2.5-VL processor (tokenizer, video processor, chat template)."""
    install_torchvision_shim()
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path))


def load_model(path: str | Path, *, train: bool = False) -> Qwen2_5_VLForConditionalGeneration:
    """The checkpoint's model in float32 on CPU; eval mode unless `train`."""
    install_torchvision_shim()
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(path), dtype=torch.float32)
    use_original_text_positions_after_video(model)
    return model.train(train)


def use_original_text_positions_after_video(model: Any) -> None:
    """Give text after a video the M-RoPE positions Qwen2.5-VL was pre-trained with, as vLLM does.

    Qwen's implementation (and vLLM's) starts the text after a vision block at the block's largest position id
    + 1, temporal ids included. transformers 5.3-5.19 start it at the block's start + max(h, w) / merge instead, so
    with more than a few frames (temporal ids run past the spatial ones) every later token sits at another
    position: measured on a 24-frame clip, the first answer token's log-probabilities differ from vLLM's
    (-0.0053 vs -0.0060) while a 4-frame clip matches exactly. Training and both engines load models through
    here, so fine-tuning, transformers and vLLM agree. Handwritten because no release fixes it yet; the wrapper
    keeps transformers' own vision positions and only shifts what follows each block.
    """
    import torch

    inner = model.model
    hf_rope_index = inner.get_rope_index
    merge = int(inner.config.vision_config.spatial_merge_size)
    tokens_per_second = int(inner.config.vision_config.tokens_per_second)

    def get_rope_index(
        input_ids: Any,
        mm_token_type_ids: Any,
        image_grid_thw: Any = None,
        video_grid_thw: Any = None,
        second_per_grid_ts: Any = None,
        attention_mask: Any = None,
        **kwargs: Any,
    ) -> Any:
        position_ids, deltas = hf_rope_index(
            input_ids,
            mm_token_type_ids,
            image_grid_thw,
            video_grid_thw,
            second_per_grid_ts,
            attention_mask,
            **kwargs,
        )
        grids = {
            1: iter(image_grid_thw if image_grid_thw is not None else []),
            2: iter(video_grid_thw if video_grid_thw is not None else []),
        }
        seconds = iter(second_per_grid_ts.tolist() if second_per_grid_ts is not None else [])
        for b in range(input_ids.shape[0]):
            keep = (
                attention_mask[b].bool()
                if attention_mask is not None
                else torch.ones_like(input_ids[b], dtype=torch.bool)
            )
            where = torch.nonzero(keep).flatten()
            types = mm_token_type_ids[b][keep].tolist()
            shift, k = 0, 0
            while k < len(types):
                end = k
                while end < len(types) and types[end] == types[k]:
                    end += 1
                if shift:
                    position_ids[:, b, where[k:end]] += shift
                if types[k] in (1, 2):
                    t, h, w = (int(x) for x in next(grids[types[k]]))
                    interval = tokens_per_second * int(next(seconds, 1)) if types[k] == 2 else 0
                    shift += max(0, (t - 1) * interval - (max(h, w) // merge - 1))
                k = end
            deltas[b] += shift
        return position_ids, deltas

    inner.get_rope_index = get_rope_index


def video_input(frames: np.ndarray, fps: float = SAMPLE_FPS) -> tuple[np.ndarray, dict[str, Any]]:
    """(frames, metadata): without metadata the processor assumes 24 fps and mis-times every temporal patch."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    t = int(frames.shape[0])
    metadata = {
        "fps": float(fps),
        "duration": t / float(fps),
        "total_num_frames": t,
        "frames_indices": list(range(t)),
        "width": int(frames.shape[2]),
        "height": int(frames.shape[1]),
        "video_backend": "opencv",
    }
    return frames, metadata


def processor_kwargs(frame_h: int, frame_w: int) -> dict[str, Any]:
    """Video kwargs that keep grid-aligned frames at their own size (the default min_pixels upscales small ones)."""
    if frame_h % GRID or frame_w % GRID:
        raise ValueError(f"frame sides must be multiples of {GRID}, got {frame_h}x{frame_w}")
    pixels = frame_h * frame_w
    return {
        "size": {"shortest_edge": pixels, "longest_edge": pixels},
        "do_resize": False,  # already on the 28-px grid at their own size: resizing would copy them for nothing
        "do_sample_frames": False,  # frames arrive already sampled at 2 FPS
        "cap_pixels_per_frame": False,  # no total-video budget: the clip builder already fits the pixel budget
    }


def video_tokens(num_frames: int, frame_h: int, frame_w: int) -> int:
    """Qwen2.5-VL tokens for one video: (T/2) * (H/28) * (W/28), T rounded up to a whole temporal patch."""
    return -(-num_frames // TEMPORAL_PATCH) * (frame_h // GRID) * (frame_w // GRID)


def render_prompt(
    processor: ProcessorMixin, messages: list[dict[str, Any]], *, add_generation_prompt: bool
) -> str:
    """The chat-template text, video still a single placeholder (the processor expands it)."""
    return processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def build_inputs(
    processor: ProcessorMixin,
    messages: list[dict[str, Any]],
    frames: np.ndarray,
    *,
    add_generation_prompt: bool,
    fps: float = SAMPLE_FPS,
) -> BatchFeature:
    """Model tensors for one conversation over one clip (batch of 1).

    Keys: input_ids, attention_mask, mm_token_type_ids (needed for the 3-D M-RoPE positions),
    pixel_values_videos, video_grid_thw, second_per_grid_ts.
    """
    text = render_prompt(processor, messages, add_generation_prompt=add_generation_prompt)
    video, metadata = video_input(frames, fps)
    return processor(
        text=[text],
        videos=[video],
        video_metadata=[metadata],
        return_tensors="pt",
        **processor_kwargs(int(frames.shape[1]), int(frames.shape[2])),
    )


def encode_lossless(frames: np.ndarray, fps: float = SAMPLE_FPS) -> bytes:
    """RGB frames as an FFV1/Matroska video at `fps`: decoded again by OpenCV they are bit-identical (tested). How clips
    travel to a vLLM server and into a LLaMA-Factory dataset."""
    h, w = int(frames.shape[1]), int(frames.shape[2])
    with tempfile.TemporaryDirectory(prefix="drivecoach-clip-") as tmp:
        path = Path(tmp) / "clip.mkv"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write FFV1 video here")
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        writer.release()
        return path.read_bytes()


__all__ = [
    "GRID",
    "SAMPLE_FPS",
    "TEMPORAL_PATCH",
    "build_inputs",
    "encode_lossless",
    "install_torchvision_shim",
    "load_model",
    "load_processor",
    "processor_kwargs",
    "render_prompt",
    "use_original_text_positions_after_video",
    "video_input",
    "video_tokens",
]
