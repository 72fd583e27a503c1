"""Helpers for tests: start the sandbox on free ports and talk to its control API.

`SandboxProcess` runs `python -m sandbox` as a subprocess (closest to how it runs in a
dev setup); `SandboxThread` runs it on an event loop in a background thread of the test
process. Both expose `http_url`, `smtp_host`, `smtp_port`, `token_uri` and `client`, a
`SandboxClient` for the control API. Only the standard library is used here, so any test
can import this module without Django.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sandbox.config import DEFAULT_FCM_PROJECT_ID, SandboxConfig
from sandbox.keys import new_service_account, write_service_account
from sandbox.server import start as start_sandbox

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PACKAGE_PARENT = Path(__file__).resolve().parent.parent


class SandboxError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"sandbox control API answered {status}: {body}")
        self.status = status
        self.body = body


class SandboxClient:
    """A small client for `/_sandbox/`; each method is one control-API call."""

    def __init__(self, http_url: str, timeout: float = 15.0) -> None:
        if not http_url.startswith(("http://", "https://")):
            raise ValueError(f"The sandbox URL must be http(s): {http_url!r}")
        self.http_url = http_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        url = f"{self.http_url}/_sandbox/{path}"
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        # The scheme is checked in __init__: only http(s) URLs reach urlopen.
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise SandboxError(exc.code, exc.read().decode("utf-8", "replace")) from None

    def health(self) -> bool:
        return bool(self._call("GET", "health")["ok"])

    def config(self) -> dict[str, Any]:
        return dict(self._call("GET", "config"))

    def messages(
        self, provider: str | None = None, *, to: str | None = None, idempotency_key: str | None = None
    ) -> list[dict[str, Any]]:
        """Received messages, oldest first."""
        query = {"provider": provider, "to": to, "idempotency_key": idempotency_key}
        return list(self._call("GET", "messages", query=query)["messages"])

    def message(self, message_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"messages/{urllib.parse.quote(message_id, safe='')}"))

    def wait_for_messages(
        self, count: int, provider: str | None = None, *, to: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Poll until at least `count` messages match, for senders running elsewhere (workers)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(provider, to=to)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def counts(self) -> dict[str, Any]:
        return dict(self._call("GET", "counts"))

    def count(self, provider: str, idempotency_key: str) -> int:
        """How many messages this provider recorded with this idempotency key."""
        keys = self.counts()["providers"].get(provider, {}).get("idempotency_keys", {})
        return int(keys.get(idempotency_key, 0))

    def requests(self, provider: str | None = None) -> list[dict[str, Any]]:
        """Every request a provider endpoint answered (including errors and faults)."""
        return list(self._call("GET", "requests", query={"provider": provider})["requests"])

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def add_fault(
        self,
        provider: str,
        status: int | str | None = None,
        *,
        match: str | None = None,
        times: int | None = None,
        retry_after: int | None = None,
        delay_ms: int = 0,
        timeout: bool | float = False,
    ) -> dict[str, Any]:
        body = {
            "provider": provider,
            "status": status,
            "match": match,
            "times": times,
            "retry_after": retry_after,
            "delay_ms": delay_ms,
            "timeout": timeout,
        }
        return dict(self._call("POST", "faults", body))

    def faults(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "faults")["faults"])

    def clear_faults(self) -> None:
        self._call("DELETE", "faults")

    def set_webhook_secret(self, name: str, secret: str) -> None:
        self._call("POST", "webhook-secrets", {"name": name, "secret": secret})

    def keys(self) -> dict[str, Any]:
        return dict(self._call("GET", "keys"))

    def set_event_key_seed(self, seed: str) -> dict[str, Any]:
        return dict(self._call("POST", "keys", {"seed": seed}))

    def register_service_account(self, client_email: str, public_key_pem: str) -> None:
        self._call("POST", "service-accounts", {"client_email": client_email, "public_key": public_key_pem})

    def write_service_account(
        self, path: Path, *, project_id: str = DEFAULT_FCM_PROJECT_ID, client_email: str | None = None
    ) -> Path:
        """Write a service-account JSON whose `token_uri` is this sandbox, and trust its key here."""
        info, public_pem = new_service_account(
            token_uri=f"{self.http_url}/token", project_id=project_id, client_email=client_email
        )
        self.register_service_account(info["client_email"], public_pem.decode("ascii"))
        return write_service_account(path, info)

    def sendgrid_callback(self, url: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        return dict(self._call("POST", "callbacks/sendgrid", {"url": url, "events": events}))

    def twilio_callback(
        self,
        url: str | None = None,
        *,
        params: dict[str, str] | None = None,
        message_sid: str | None = None,
        status: str | None = None,
        error_code: int | None = None,
        auth_token: str | None = None,
    ) -> dict[str, Any]:
        body = {
            "url": url,
            "params": params,
            "message_sid": message_sid,
            "status": status,
            "error_code": error_code,
            "auth_token": auth_token,
        }
        return dict(self._call("POST", "callbacks/twilio", {k: v for k, v in body.items() if v is not None}))

    def auto_callbacks(
        self,
        provider: str,
        url: str | None = None,
        *,
        events: list[str] | None = None,
        delay_ms: int = 0,
    ) -> dict[str, Any]:
        """From now on the provider reports every message it accepts: SendGrid `events` (default
        processed, delivered) to the Event Webhook `url`; Twilio statuses (`events`, default sent,
        delivered) to each message's StatusCallback, or to `url`; each `delay_ms` after accepting."""
        body: dict[str, Any] = {"provider": provider, "url": url, "delay_ms": delay_ms}
        if events is not None:
            body["events"] = events
        return dict(self._call("POST", "auto-callbacks", body))

    def clear_auto_callbacks(self) -> None:
        self._call("DELETE", "auto-callbacks")


class _Running:
    http_port: int
    smtp_port: int
    smtp_host = HOST

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def token_uri(self) -> str:
        return f"{self.http_url}/token"

    @property
    def client(self) -> SandboxClient:
        return SandboxClient(self.http_url)


class SandboxProcess(_Running):
    """`with SandboxProcess() as sandbox:` runs `python -m sandbox` on free ports until the block ends."""

    def __init__(
        self, *, data_dir: Path | None = None, extra_args: tuple[str, ...] = (), startup_timeout: float = 15.0
    ) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.startup_timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return Path(self._tmp.name) / "sandbox.log"

    def start(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="signalbox-sandbox-")
        ready_file = Path(self._tmp.name) / "ready.json"
        command = [sys.executable, "-m", "sandbox", "--host", HOST, "--http-port", "0", "--smtp-port", "0"]
        command += ["--ready-file", str(ready_file), *self.extra_args]
        if self.data_dir is not None:
            command += ["--data-dir", str(self.data_dir)]
        python_path = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path}
        with self.log_path.open("wb") as log:
            # The command is this interpreter with fixed flags, never outside input.
            self._process = subprocess.Popen(  # noqa: S603
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=PACKAGE_PARENT
            )
        deadline = time.monotonic() + self.startup_timeout
        while not ready_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"The sandbox did not start; its log:\n{self._read_log()}")
            time.sleep(0.02)
        ready = json.loads(ready_file.read_text(encoding="utf-8"))
        self.http_port, self.smtp_port = ready["http_port"], ready["smtp_port"]
        return self

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SandboxThread(_Running):
    """The sandbox on its own event loop in a daemon thread of this process (no subprocess)."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig(host=HOST, http_port=0, smtp_port=0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    def start(self, timeout: float = 10.0) -> Self:
        ready = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                running = await start_sandbox(self.config)
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                raise
            self.http_port, self.smtp_port = running.http_port, running.smtp_port
            ready.set()
            try:
                await self._stop.wait()
            finally:
                await running.stop()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(main())
            except Exception:
                # A start failure is reported to start() through `failure`; anything later is logged.
                if not failure:
                    log.exception("The sandbox thread stopped with an error")
            finally:
                self._loop.close()

        self._thread = threading.Thread(target=run, name="signalbox-sandbox", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure:
            raise RuntimeError(f"The sandbox did not start: {failure[0] if failure else 'timed out'}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
