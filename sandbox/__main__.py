"""`python -m sandbox`: run the provider sandbox until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from sandbox.config import SandboxConfig
from sandbox.server import serve


def parse_args(argv: list[str] | None = None) -> SandboxConfig:
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--http-port", type=int, default=defaults.http_port, help="0 picks a free port")
    parser.add_argument("--smtp-port", type=int, default=defaults.smtp_port, help="0 picks a free port")
    parser.add_argument("--data-dir", type=Path, help="append received messages to DIR/messages.jsonl")
    parser.add_argument("--ready-file", type=Path, help="write the bound ports here as JSON once listening")
    parser.add_argument("--sendgrid-api-key", default=defaults.sendgrid_api_key)
    parser.add_argument("--twilio-account-sid", default=defaults.twilio_account_sid)
    parser.add_argument("--twilio-auth-token", default=defaults.twilio_auth_token)
    parser.add_argument("--slack-bot-token", default=defaults.slack_bot_token)
    parser.add_argument("--event-key-seed", default=defaults.event_key_seed, help="seed of the SendGrid signing key")
    parser.add_argument(
        "--hang-seconds", type=float, default=defaults.hang_seconds, help="how long timeout faults hang"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return SandboxConfig(
        host=args.host,
        http_port=args.http_port,
        smtp_port=args.smtp_port,
        data_dir=args.data_dir,
        ready_file=args.ready_file,
        sendgrid_api_key=args.sendgrid_api_key,
        twilio_account_sid=args.twilio_account_sid,
        twilio_auth_token=args.twilio_auth_token,
        slack_bot_token=args.slack_bot_token,
        event_key_seed=args.event_key_seed,
        hang_seconds=args.hang_seconds,
    )


def main(argv: list[str] | None = None) -> None:
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
