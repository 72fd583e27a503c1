"""Workflows: declarative state machines over a tenant's entities, and transition intents."""
