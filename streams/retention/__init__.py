"""Retention (issue 18, item 4): per-fleet periods for video and results, legal holds, and the job that deletes what
expired (`drivecoach retention run`). `policy` decides (pure functions), `store` reads and writes Postgres, `job`
runs the deletions in an order a kill at any point and a re-run converge from."""
