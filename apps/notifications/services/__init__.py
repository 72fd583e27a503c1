"""Writes and pipeline steps of the notifications app, one module per concern:

- `templates`: create, change (a new version), archive and restore templates; categories.
- `recipients`: recipients (and bulk upsert), devices, topics and memberships.
- `preferences`: preference layers, their merge, quiet hours.
- `notifications`: `notification_create` (the intent) and `notification_cancel`.
- `fanout`: planning chunks and expanding each chunk into deliveries.
- `sending`: claiming deliveries, calling channel adapters, recording results and retries.
- `dispatch`: the dispatcher (due retries, deferrals, scheduled intents) and the sweeper.
- `digest`: the seam where digest-bound deliveries wait.
- `inbox`: in-app inbox state and recipient tokens.
- `ratelimits`, `suppressions`, `callbacks`, `replay`: send limits, the suppression list, provider
  status reports and dead-letter replays (docs/reliability.md).
- `sendgrid_events`, `twilio_status`: the providers' signed status callbacks (SendGrid Event
  Webhook, Twilio status callbacks), applied through `callbacks` and `suppressions`.
- `engagement`, `unsubscribe`: what the links in emails report (opens, clicks, one-click
  unsubscribe); the views are apps/notifications/public.py.
"""
