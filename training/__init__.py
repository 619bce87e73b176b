"""drivecoach training: the tiny DEMO Qwen2.5-VL builder and the supervised fine-tuning recipe."""
