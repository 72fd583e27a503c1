"""Typed access to the tenancy app's settings (defaults in project/settings.py; apps/core/conf.py says why)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured

from apps.core.conf import as_str_list, setting


@dataclass(frozen=True)
class TenancySettings:
    # SIGNALBOX_TRUSTED_PROXIES: CIDRs whose X-Forwarded-For is believed (apps/tenancy/throttling.py).
    trusted_proxies: tuple[str, ...]


def tenancy_settings() -> TenancySettings:
    name = "SIGNALBOX_TRUSTED_PROXIES"
    proxies = as_str_list(setting(name), name)
    for cidr in proxies:
        try:
            ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name} must be CIDRs, comma-separated: {exc}") from exc
    return TenancySettings(trusted_proxies=proxies)
