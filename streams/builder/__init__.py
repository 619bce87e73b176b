"""Clip builders: a consumer group on `clip-plans` that decodes and stacks each planned clip in a process pool and
publishes it to `clips`, committing a plan only once its clip is acknowledged."""
