"""Push through Firebase Cloud Messaging HTTP v1, with `pyfcm` and a service account.

FCM v1 takes one token per request, so a recipient's devices are one request each. A token
FCM calls UNREGISTERED (or INVALID_ARGUMENT about the token itself) is reported in
`SendResult.invalid_tokens` for the caller to deactivate that device.

Signalbox owns retries, so pyfcm's own are off: its session gets `HTTPAdapter(max_retries=0)`
and `send_request` is replaced by one that never sleeps on `Retry-After` (the wait goes back
in the result instead). It still renews an expired access token once, as pyfcm does.
Clients are kept per credentials, so the OAuth token is fetched once per process and hour,
not per push.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import google.auth.transport.requests
import requests
from django.conf import settings
from google.auth import exceptions as google_errors
from google.oauth2 import service_account
from pyfcm import FCMNotification
from pyfcm.errors import InvalidDataError
from requests.adapters import HTTPAdapter

from apps.core.net import GuardedAdapter, UnresolvableHost, UnsafeUrl, guarded_session
from apps.providers.adapters import Adapter, default_timeout, url_problems
from apps.providers.base import Channel, Health, Message, SendResult
from apps.providers.classify import from_network_error, is_transient_status, parse_retry_after, truncate

NAME = "fcm"
DEFAULT_ENDPOINT = "https://fcm.googleapis.com/v1/projects"
SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
MAX_CLIENTS = 32


class SignalboxFCM(FCMNotification):
    """pyfcm with a configurable endpoint and no retries or sleeps of its own.

    `guarded` (a tenant's config): the pushes and the access-token fetch from the key's
    `token_uri` go through the egress guard (apps/core/net.py) — checked and pinned address,
    no proxy, a redirect refused rather than followed.
    """

    def __init__(self, *, endpoint: str, guarded: bool = True, **kwargs: Any) -> None:
        adapter = GuardedAdapter() if guarded else HTTPAdapter(max_retries=0)
        super().__init__(adapter=adapter, **kwargs)
        self.FCM_END_POINT_BASE = endpoint.rstrip("/")
        self.guarded = guarded

    def _get_access_token(self) -> str:
        if not self.guarded:
            return str(super()._get_access_token())
        if self.credentials is None:
            self._initialize_credentials()
        try:  # as pyfcm does, but google-auth's request goes through the guard
            with guarded_session() as session:
                self.credentials.refresh(google.auth.transport.requests.Request(session=session))
            return str(self.credentials.token)
        except Exception as exc:
            raise InvalidDataError(exc) from exc

    def send_request(self, payload: Any = None, timeout: Any = None) -> requests.Response:
        response = self.requests_session.post(self.fcm_end_point, data=payload, timeout=timeout)
        if self._is_access_token_expired(response):
            self.thread_local.token_expiry = 0
            response = self.requests_session.post(self.fcm_end_point, data=payload, timeout=timeout)
        return response


_clients: OrderedDict[tuple[str, str, str, bool], SignalboxFCM] = OrderedDict()
_clients_lock = threading.Lock()


def client_for(
    *, info: Mapping[str, Any] | None, path: str, project_id: str, endpoint: str, guarded: bool = True
) -> SignalboxFCM:
    fingerprint = hashlib.sha256(json.dumps(info, sort_keys=True).encode() if info else path.encode()).hexdigest()
    key = (fingerprint, project_id, endpoint, guarded)
    with _clients_lock:
        client = _clients.get(key)
        if client is not None:
            _clients.move_to_end(key)
            return client
        if info:
            credentials = service_account.Credentials.from_service_account_info(dict(info), scopes=SCOPES)
            client = SignalboxFCM(
                endpoint=endpoint, guarded=guarded, credentials=credentials, project_id=project_id or None
            )
        else:
            client = SignalboxFCM(
                endpoint=endpoint, guarded=guarded, service_account_file=path, project_id=project_id or None
            )
        _clients[key] = client
        while len(_clients) > MAX_CLIENTS:
            _clients.popitem(last=False)
        return client


@lru_cache(maxsize=4)
def sandbox_service_account(url: str) -> str:
    """Development only: the local sandbox's ready-made service account, as JSON text."""
    try:
        response = requests.get(url, timeout=5)
        response.raise_for_status()
    except requests.RequestException:
        sandbox_service_account.cache_clear()
        return ""
    return response.text


def from_auth_error(exc: BaseException) -> SendResult:
    """pyfcm wraps token-endpoint failures in InvalidDataError; the cause says which kind."""
    cause = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    if isinstance(cause, (UnsafeUrl, UnresolvableHost)):  # the guard refused the token_uri
        return from_network_error(NAME, cause) or SendResult.permanent(NAME, cause.message, code=cause.code)
    detail = truncate(f"Access token: {cause}")
    if isinstance(cause, google_errors.TransportError) or getattr(cause, "retryable", False):
        return SendResult.transient(NAME, detail, code="token_unavailable")
    return SendResult.permanent(NAME, detail, code="auth_failed")


def _fcm_error(response: requests.Response) -> tuple[str, str, bool]:
    """(FCM errorCode or Google status, message, whether a field of the payload was blamed)."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        return "", truncate(response.text or f"HTTP {response.status_code}"), False
    code, blamed_field = str(error.get("status") or ""), False
    for detail in error.get("details") or []:
        if detail.get("@type") == FCM_ERROR_TYPE and detail.get("errorCode"):
            code = str(detail["errorCode"])
        if detail.get("@type") == BAD_REQUEST_TYPE:
            blamed_field = any(v.get("field") != "message.token" for v in detail.get("fieldViolations") or [])
    return code, truncate(error.get("message") or f"HTTP {response.status_code}"), blamed_field


def from_response(response: requests.Response) -> tuple[SendResult, bool]:
    """One token's result, and whether the token itself is dead."""
    status = response.status_code
    if status == 200:
        return SendResult.ok(NAME, str(response.json().get("name", ""))), False
    code, message, blamed_field = _fcm_error(response)
    code = code or f"http_{status}"
    if code == "UNREGISTERED" or (code == "INVALID_ARGUMENT" and not blamed_field):
        return SendResult.permanent(NAME, message, code=code, status_code=status), True
    if status == 401 and code not in ("THIRD_PARTY_AUTH_ERROR",):
        return SendResult.permanent(NAME, message, code="auth_failed", status_code=status), False
    if is_transient_status(status):
        retry_after = parse_retry_after(response.headers)
        return SendResult.transient(NAME, message, code=code, status_code=status, retry_after=retry_after), False
    return SendResult.permanent(NAME, message, code=code, status_code=status), False


def combine(results: list[tuple[str, SendResult, bool]]) -> SendResult:
    """One result for a recipient's devices: accepted if any device took it."""
    invalid = tuple(token for token, _, dead in results if dead)
    accepted = [r for _, r, _ in results if r.accepted]
    transient = [r for _, r, _ in results if r.outcome == "transient"]
    failures = [r for _, r, _ in results if not r.accepted]
    summary = f"{len(accepted)} of {len(results)} devices accepted"
    if failures:
        summary += "; " + ", ".join(sorted({r.code for r in failures}))
    if accepted:
        # Resending would push twice to the devices that got it; FCM has no idempotency key.
        return SendResult.ok(NAME, accepted[0].message_id, detail=summary, invalid_tokens=invalid)
    if transient:
        waits = [r.retry_after for r in transient if r.retry_after is not None]
        first = transient[0]
        return SendResult.transient(
            NAME,
            summary,
            code=first.code,
            status_code=first.status_code,
            retry_after=max(waits) if waits else None,
            invalid_tokens=invalid,
        )
    first = failures[0]
    return SendResult.permanent(NAME, summary, code=first.code, status_code=first.status_code, invalid_tokens=invalid)


def _data(message: Message) -> dict[str, str]:
    """FCM data values must be strings."""
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in message.data.items()}
    data["idempotency_key"] = message.idempotency_key
    return data


class FcmProvider(Adapter):
    name = NAME
    channel = Channel.PUSH
    secret_fields = ("service_account_json",)
    option_fields = ("project_id", "endpoint", "timeout")
    # A path on this server: from the environment only, never from a tenant.
    env_only_fields = ("service_account_file",)
    required_fields = ("service_account_json|service_account_file",)

    def __init__(
        self,
        *,
        service_account_json: str = "",
        service_account_file: str = "",
        project_id: str = "",
        endpoint: str = DEFAULT_ENDPOINT,
        timeout: float | None = None,
    ) -> None:
        self.info: dict[str, Any] | None = json.loads(service_account_json) if service_account_json else None
        self.path = service_account_file
        self.project_id = project_id or str((self.info or {}).get("project_id") or "")
        self.endpoint = endpoint
        self.timeout = float(timeout or default_timeout())

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return (*super().fields(), *cls.env_only_fields)

    @classmethod
    def env_config(cls) -> dict[str, Any]:
        info = settings.FCM_SERVICE_ACCOUNT_JSON
        path = settings.FCM_SERVICE_ACCOUNT_FILE
        if not info and not path and settings.FCM_SANDBOX_SERVICE_ACCOUNT_URL:
            info = sandbox_service_account(settings.FCM_SANDBOX_SERVICE_ACCOUNT_URL)
        return {
            "service_account_json": info,
            "service_account_file": path,
            "project_id": settings.FCM_PROJECT_ID,
            "endpoint": settings.FCM_ENDPOINT,
        }

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if config.get("endpoint") and (problems := url_problems(config["endpoint"])):
            errors["endpoint"] = problems
        raw = config.get("service_account_json")
        if not raw:
            return errors
        try:
            info = json.loads(raw)
        except ValueError:
            return {**errors, "service_account_json": ["Not JSON: paste the service account key file's content."]}
        wanted = ("client_email", "private_key", "token_uri")
        lacking = [k for k in wanted if not (isinstance(info, dict) and info.get(k))]
        if lacking:
            return {**errors, "service_account_json": [f"A service account key needs {', '.join(lacking)}."]}
        # google-auth fetches the access token from the key's own token_uri.
        if problems := url_problems(info["token_uri"]):
            errors["service_account_json"] = [f"token_uri: {problem}" for problem in problems]
        if not (info.get("project_id") or config.get("project_id")):
            errors["project_id"] = ["Give project_id (the key file has none)."]
        return errors

    def _client(self) -> SignalboxFCM:
        return client_for(
            info=self.info, path=self.path, project_id=self.project_id, endpoint=self.endpoint, guarded=not self.trusted
        )

    def _send_one(self, client: SignalboxFCM, token: str, message: Message) -> tuple[SendResult, bool]:
        title = message.title or message.subject
        payload = client.parse_payload(
            fcm_token=token,
            notification_title=title or None,
            notification_body=message.text or None,
            data_payload=_data(message),
        )
        try:
            response = client.send_request(payload, self.timeout)
        except InvalidDataError as exc:
            return from_auth_error(exc), False
        except google_errors.GoogleAuthError as exc:
            return from_auth_error(exc), False
        except Exception as exc:
            network = from_network_error(NAME, exc)
            if network is None:
                raise
            return network, False
        return from_response(response)

    def send(self, message: Message) -> SendResult:
        tokens = [message.to] if isinstance(message.to, str) else [str(t) for t in message.to or []]
        if not tokens:
            return SendResult.permanent(NAME, "The recipient has no active device.", code="no_devices")
        try:
            client = self._client()
        except (ValueError, KeyError, InvalidDataError) as exc:
            return SendResult.permanent(NAME, truncate(f"Unusable service account: {exc}"), code="auth_failed")
        results = []
        for token in tokens:
            result, dead = self._send_one(client, token, message)
            results.append((token, result, dead))
            if result.code in ("auth_failed", "token_unavailable"):
                break  # the next token would fail the same way
        return combine(results)

    def check(self) -> Health:
        try:
            self._client()._get_access_token()
        except Exception as exc:
            return Health(False, from_auth_error(exc).detail)
        return Health(True, "access token issued")
