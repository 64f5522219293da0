"""Rules and use cases. Imports neither grpc nor tortoise; raises domain errors only."""
