"""The notifications API under /api/v1/, one module per resource: notifications, deliveries, recipients
(preferences, inbox tokens, webhook secrets), devices, topics, categories, default preferences, templates
(versions, archive, preview) and the in-app inbox. `apps/notifications/urls.py` routes to each.

Views stay thin: they parse, call a service or a selector, and shape the answer. Writes need the
`notifications:write` scope; reads need `read`. The inbox and a recipient's preferences also accept a
recipient token.
"""
