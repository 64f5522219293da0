"""Transport: thin servicer methods, proto <-> entity mappers, the error -> status table."""
