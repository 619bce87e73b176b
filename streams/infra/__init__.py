"""The infrastructure every stage stands on: the broker, the database and fleet roles, the blob store, topic names,
child processes and metrics."""
