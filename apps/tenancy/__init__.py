"""Tenants and their API keys: who is calling, and whose data they may see."""
