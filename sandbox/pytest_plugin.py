"""pytest fixtures for any test suite that needs the provider sandbox (no Django needed).

`sandbox` is one `python -m sandbox` subprocess for the whole session; `sandbox_client`
resets its state before the test and hands back the control-API client. Load them with
`pytest_plugins = ["sandbox.pytest_plugin"]` in a root conftest, or import them into a
conftest (as `tests/sandbox/conftest.py` does).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sandbox.testing import SandboxClient, SandboxProcess


@pytest.fixture(scope="session")
def sandbox() -> Iterator[SandboxProcess]:
    with SandboxProcess() as running:
        yield running


@pytest.fixture
def sandbox_client(sandbox: SandboxProcess) -> SandboxClient:
    client = sandbox.client
    client.reset()
    return client
