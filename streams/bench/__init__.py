"""The benchmarks behind `drivecoach bench`, one module each: every figure is a ratio against a baseline measured in
the same run. CPU seconds of this process (`time.process_time`) unless a benchmark spans other processes or the
Postgres server (then wall seconds, and the module says so)."""
