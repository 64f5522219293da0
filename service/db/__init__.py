"""Tortoise models and queries. Rows never leave this package: callers get entities."""
