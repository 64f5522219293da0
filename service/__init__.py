"""users: a gRPC service that owns user accounts, credentials, posts and balances."""
