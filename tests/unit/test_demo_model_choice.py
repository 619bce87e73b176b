"""Which trips and frame size `drivecoach demo` uses for the model it serves."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from streams.demo import DEMO_MODEL_RECIPE, choose_model
from streams.settings import Settings


def _checkpoint(path: Path, *, demo: bool) -> Path:
    path.mkdir()
    (path / "drivecoach.json").write_text(json.dumps({"demo": demo}))
    return path


def test_a_demo_checkpoint_given_by_path_is_served_at_its_own_frame_size(tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "candidate", demo=True)
    path, trip_s, settings = choose_model(Settings(home=tmp_path, model=str(model)), Console(quiet=True))
    assert path == model and trip_s == DEMO_MODEL_RECIPE["trip_s"]
    assert settings.max_pixels == DEMO_MODEL_RECIPE["max_pixels"] != Settings().max_pixels


def test_a_real_checkpoint_keeps_the_users_settings(tmp_path: Path) -> None:
    model = _checkpoint(tmp_path / "qwen", demo=False)
    user = Settings(home=tmp_path, model=str(model), max_pixels=32768)
    path, trip_s, settings = choose_model(user, Console(quiet=True))
    assert (path, trip_s, settings.max_pixels) == (model, 20.0, 32768)
