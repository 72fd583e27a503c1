"""The control API, the outbox page, data-dir persistence and the in-thread runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from sandbox.testing import SandboxClient, SandboxError, SandboxProcess, SandboxThread


def post_hook(http_url: str, name: str, body: str) -> None:
    requests.post(f"{http_url}/hooks/{name}", data=body.encode(), timeout=5).raise_for_status()


def test_the_outbox_lists_newest_first_and_escapes_everything(
    sandbox: SandboxProcess, sandbox_client: SandboxClient
) -> None:
    post_hook(sandbox.http_url, "first", "older")
    post_hook(sandbox.http_url, "second", "<script>alert(1)</script>")

    page = requests.get(f"{sandbox.http_url}/", timeout=5)

    assert page.headers["Content-Type"].startswith("text/html")
    assert '<meta http-equiv="refresh"' in page.text and "/_sandbox/counts" in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert page.text.index("second") < page.text.index("first")


def test_messages_filter_by_provider_and_recipient(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    post_hook(sandbox.http_url, "a", "1")
    post_hook(sandbox.http_url, "b", "2")

    [only_b] = sandbox_client.messages("webhook", to="b")

    assert only_b["text"] == "2"
    assert sandbox_client.message(only_b["id"])["recipient"] == "b"
    assert sandbox_client.messages("sendgrid") == []


def test_reset_forgets_messages_faults_and_secrets(sandbox: SandboxProcess, sandbox_client: SandboxClient) -> None:
    post_hook(sandbox.http_url, "a", "1")
    sandbox_client.add_fault("slack", 500)

    sandbox_client.reset()

    assert sandbox_client.messages() == []
    assert sandbox_client.faults() == []
    assert sandbox_client.counts() == {"total": 0, "providers": {}, "duplicates": {}}


def test_an_unknown_message_is_a_404(sandbox_client: SandboxClient) -> None:
    with pytest.raises(SandboxError) as caught:
        sandbox_client.message("msg_missing")

    assert caught.value.status == 404


def test_the_data_dir_keeps_messages_across_restarts(tmp_path: Path) -> None:
    with SandboxProcess(data_dir=tmp_path) as first:
        post_hook(first.http_url, "kept", "persisted")
    with SandboxProcess(data_dir=tmp_path) as second:
        [message] = second.client.messages()

    assert message["text"] == "persisted"
    [line] = (tmp_path / "messages.jsonl").read_text().splitlines()
    assert json.loads(line)["recipient"] == "kept"


def test_the_sandbox_also_runs_in_a_thread() -> None:
    with SandboxThread() as running:
        post_hook(running.http_url, "threaded", "hi")

        assert running.client.messages()[0]["recipient"] == "threaded"
