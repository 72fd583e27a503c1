"""Notifications: templates, recipients, preferences, intents, fan-out, deliveries and the in-app inbox."""
