"""The provider sandbox's public development credentials, as the settings use them.

With DEBUG on and a sandbox configured (`SIGNALBOX_SANDBOX_URL`), a provider with no credentials of its
own defaults to these (project/settings.py), and production refuses every one of them
(project/production.py). They are copies of the sandbox's own (sandbox/config.py, and the SendGrid
Event Webhook key the sandbox derives from its seed, sandbox/keys.py): the settings never import
the development sandbox. tests/foundation/test_production_settings.py keeps the copies equal.

Public on purpose: they authorise nothing outside the sandbox.
"""

from __future__ import annotations

SENDGRID_API_KEY = "SG.sandbox.signalbox-sandbox-api-key"
TWILIO_ACCOUNT_SID = "AC5a4db0c5e0a54f0e8d5c3f2b1a0e9d8c"
TWILIO_AUTH_TOKEN = "sandbox-twilio-auth-token"  # noqa: S105
SLACK_BOT_TOKEN = "xoxb-sandbox-bot-token"  # noqa: S105
# The public key of the sandbox's SendGrid Event Webhook signing key (seed `signalbox-sandbox`).
SENDGRID_EVENT_WEBHOOK_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEjJ1sYDemKr6M801sA/QG05oMXTeTBYL0pOkUCE5r5WPu"
    "HVHSdvE79EWnGa8EB16zVgrFeYmpJ2QosY2TGsim2g=="
)
