"""A local stand-in for the providers Signalbox talks to.

One process answers the wire protocols of SendGrid, Twilio, FCM (with Google's OAuth token
endpoint), Slack, generic webhooks and SMTP, records what it received, and injects faults
on demand, so the real SDKs can be exercised end to end without leaving 127.0.0.1.
Run it with `python -m sandbox`; drive it from tests with `sandbox.testing`.
"""

from sandbox.config import SandboxConfig

__all__ = ["SandboxConfig"]
