"""Tracked tasks: background jobs a client starts by POST and polls at /api/v1/tasks/<id>/."""
