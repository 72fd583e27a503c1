"""Writes for workflows: definitions (versioned), instances, transition intents and their application."""
