"""The drivecoach runtime: producer, Faust joiner and clip builder, inference worker, Postgres sink, CLI."""
