"""Every contract of drivecoach: Kafka messages, the event taxonomy, the CoT format and the SQL schema."""
