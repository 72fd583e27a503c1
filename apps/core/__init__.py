"""What every domain app shares: errors, tenant scoping, idempotency, health, request ids."""
