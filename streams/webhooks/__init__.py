"""Signed webhooks: fleets' endpoints, the outbox the database's triggers fill, and the process that delivers it."""
