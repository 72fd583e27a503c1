"""The recipient's pages: the hosted preference page (reached from the signed link in every email)
and the inbox demo page (`make run`).

The preference page works without JavaScript: a plain form, CSRF-protected, posted back to the same
signed URL, then redirected (post/redirect/get). Its Content-Security-Policy allows no script at
all, styles only from our static files (plus one nonce'd block carrying the tenant's colour), and
framing only from the tenant's allowed origins.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_GET, require_http_methods

from apps.core.actors import Actor
from apps.core.errors import ApplicationError
from apps.notifications.models import Digest, Recipient
from apps.notifications.services.inbox import inbox_token_mint
from apps.notifications.services.preferences import preference_centre, preference_centre_save
from apps.observability.audit import audit_record
from apps.portal import services
from apps.portal.conf import inbox_demo_settings
from apps.providers import links
from apps.tenancy.models import ApiKey, Tenant


def _secure(
    response: HttpResponse, *, tenant: Any, nonce: str, scripts: bool = False, connect_extra: str = ""
) -> HttpResponse:
    origins = services.frame_ancestors(tenant) if tenant is not None else "'none'"
    script = "'self'" if scripts else "'none'"
    connect = f"'self' {connect_extra}".strip() if scripts else "'none'"
    response["Content-Security-Policy"] = (
        f"default-src 'none'; script-src {script}; connect-src {connect}; "
        f"style-src 'self' 'nonce-{nonce}'; img-src 'self' https: data:; "
        f"form-action 'self'; base-uri 'none'; frame-ancestors {origins}"
    )
    # The page's URL is the credential: never sent to another origin (the tenant's logo host).
    response["Referrer-Policy"] = "same-origin"
    if origins != "'none'":
        response.xframe_options_exempt = True  # type: ignore[attr-defined]  # frame-ancestors decides
    return response


def _flatten(fields: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for value in fields.values():
        if isinstance(value, dict):
            out += _flatten(value)
        else:
            out += [str(v) for v in (value if isinstance(value, list) else [value])]
    return out


@never_cache
@csrf_protect
@require_http_methods(["GET", "POST"])
def preferences_page(request: HttpRequest, token: str) -> HttpResponse:
    nonce = secrets.token_urlsafe(16)
    try:
        link = links.preferences_link_read(token)
    except links.BadLink as exc:
        context = {"title": "Link expired" if exc.expired else "Unknown link", "message": str(exc), "nonce": nonce}
        return _secure(
            render(request, "portal/message.html", context, status=410 if exc.expired else 404),
            tenant=None,
            nonce=nonce,
        )
    recipient = (
        Recipient.objects.select_related("tenant")
        .filter(pk=link.recipient_id, tenant_id=link.tenant_id, tenant__is_active=True)
        .first()
    )
    if recipient is None:
        context = {"title": "Unknown link", "message": "This recipient no longer exists.", "nonce": nonce}
        return _secure(render(request, "portal/message.html", context, status=404), tenant=None, nonce=nonce)
    tenant = recipient.tenant
    centre = preference_centre(tenant=tenant, recipient=recipient)
    errors: list[str] = []
    if request.method == "POST":
        layers, profile, form_errors = services.layers_from_form(centre, request.POST)
        errors = _flatten(form_errors)
        if not errors:
            try:
                preference_centre_save(tenant=tenant, recipient=recipient, layers=layers, profile=profile)
            except ApplicationError as refused:
                errors = _flatten(refused.fields) or [refused.message]
            else:
                audit_record(
                    action="recipient.preferences_changed",
                    tenant=tenant,
                    actor=Actor(kind="recipient", id=recipient.external_id),
                    target=recipient,
                    data={"via": "preference-page"},
                )
                return HttpResponseRedirect(f"{request.path}?saved=1")
    general = services.general_layer(centre)
    page: dict[str, Any] = {
        "brand": services.tenant_branding(tenant),
        "nonce": nonce,
        "rows": services.form_rows(centre),
        "digest": general.get("digest") or "",
        "digests": [("", "As the sender chooses"), *[(d.value, d.label) for d in Digest]],
        "quiet": general.get("quiet_hours") or {},
        "centre": centre,
        "errors": errors,
        "saved": request.GET.get("saved") == "1" and not errors,
    }
    return _secure(
        render(request, "portal/preferences.html", page, status=400 if errors else 200), tenant=tenant, nonce=nonce
    )


@never_cache
@require_GET
def inbox_demo(request: HttpRequest) -> HttpResponse:
    """The components for the demo recipient, with a token minted server-side as a product would.

    Only with DEBUG on or SIGNALBOX_INBOX_DEMO set; the tenant and recipient are
    SIGNALBOX_INBOX_DEMO_TENANT / _RECIPIENT (`make run`'s demo, "demo" / "ada").
    """
    demo = inbox_demo_settings()
    if not (settings.DEBUG or demo.enabled):
        raise Http404("No demo here.")
    tenant = Tenant.objects.filter(slug=demo.tenant).first()
    recipient = Recipient.objects.filter(tenant=tenant, external_id=demo.recipient).select_related("tenant").first()
    key = (
        ApiKey.objects.filter(tenant=tenant, revoked=False)
        .filter(Q(expiry_date__isnull=True) | Q(expiry_date__gt=timezone.now()))
        .order_by("-created")
        .first()
    )
    if tenant is None or recipient is None or key is None:
        raise Http404("Run `make run` (bootstrap_demo) first: no demo tenant, recipient or key.")
    token, _ = inbox_token_mint(recipient=recipient, key_prefix=key.prefix, ttl_seconds=3600)
    try:
        poll = min(max(float(request.GET.get("poll", "5")), 0.2), 60.0)
    except ValueError:
        poll = 5.0
    nonce = secrets.token_urlsafe(16)
    context: dict[str, Any] = {
        "token": token,
        "recipient": recipient,
        "poll": poll,
        "stream_url": demo.stream_url,
        "preferences_url": links.preferences_url(tenant_id=str(tenant.pk), recipient_id=recipient.pk),
        "nonce": nonce,
    }
    stream = urlsplit(context["stream_url"])
    return _secure(
        render(request, "portal/demo.html", context),
        tenant=tenant,
        nonce=nonce,
        scripts=True,
        connect_extra=f"{stream.scheme}://{stream.netloc}" if stream.scheme and stream.netloc else "",
    )
