"""Placeholder, replaced by the NATS relay."""
