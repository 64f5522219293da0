from __future__ import annotations

from service.db.migrate import model_changes


async def test_migrations_match_the_models():
    # Fails after a model change without a migration: run `make migrations NAME=...`.
    assert await model_changes() == []
