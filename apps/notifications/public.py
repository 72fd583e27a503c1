"""Public endpoints outside /api/v1, without an API key: the signature is the credential.

    GET       /t/o/<token>.gif   counts an open, answers a 1x1 transparent GIF
    GET       /t/c/<token>       counts a click, 302 to the URL that was signed (and only that one)
    GET/POST  /u/<token>         one-click unsubscribe (RFC 8058): GET shows a confirmation page,
                                 POST unsubscribes (what mail clients send, without a CSRF token)
    POST      /callbacks/twilio/status?delivery=<id>   Twilio's status callback (X-Twilio-Signature)
    POST      /callbacks/sendgrid/events   SendGrid's Event Webhook (ECDSA signature; services/sendgrid_events.py)

A token whose signature does not check out answers 404, a callback whose signature does not
verify 403; neither changes anything. The links are made by the providers app when it composes
an email (apps/providers/tracking.py, apps/providers/links.py); what comes back is applied here,
beside the deliveries it updates.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.utils.html import escape
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.core.errors import ApplicationError, error_body
from apps.core.parsers import check_query_dict
from apps.notifications.services import sendgrid_events as sendgrid
from apps.notifications.services.engagement import engagement_record
from apps.notifications.services.twilio_status import twilio_status_record
from apps.notifications.services.unsubscribe import recipient_unsubscribe
from apps.observability import metrics
from apps.providers import tracking
from apps.providers.links import preferences_link_html

# A 1x1 transparent GIF.
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body style="font-family:sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem">
<h1 style="font-size:1.4rem">{title}</h1><p>{text}</p>{form}</body></html>"""


@never_cache
@require_GET
def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    try:
        delivery_id = tracking.open_token_delivery(token)
    except tracking.BadToken as exc:
        raise Http404("Unknown link.") from exc
    engagement_record(delivery_id=delivery_id, kind="open")
    return HttpResponse(PIXEL, content_type="image/gif")


@never_cache
@require_GET
def click(request: HttpRequest, token: str) -> HttpResponse:
    try:
        link = tracking.click_token_read(token)
    except tracking.BadToken as exc:
        raise Http404("Unknown link.") from exc
    engagement_record(delivery_id=link.delivery_id, kind="click", url=link.url)
    return HttpResponseRedirect(link.url)


def _page(title: str, text: str, form: str = "", status: int = 200) -> HttpResponse:
    return HttpResponse(PAGE.format(title=escape(title), text=escape(text), form=form), status=status)


@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    try:
        target = tracking.unsubscribe_token_read(token)
    except tracking.BadToken as exc:
        raise Http404("Unknown link.") from exc
    what = f"“{target.category}” emails" if target.category else "all messages"
    manage = preferences_link_html(tenant_id=target.tenant_id, recipient_id=target.recipient_id)
    if request.method == "GET":
        # A GET changes nothing: link scanners and previews follow links.
        button = '<form method="post"><button type="submit">Unsubscribe</button></form>'
        return _page("Unsubscribe", f"Stop receiving {what}?", button + manage)
    done = recipient_unsubscribe(tenant_id=target.tenant_id, recipient_id=target.recipient_id, category=target.category)
    if not done:
        return _page("Nothing to unsubscribe", "This subscription no longer exists.", status=404)
    return _page("Unsubscribed", f"You will no longer receive {what}.", manage)


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    """Twilio's message status callback; the signature covers the URL we gave it, so it is rebuilt
    from PUBLIC_URL (what Twilio called), not from the Host header a proxy passes on."""
    url = f"{settings.PUBLIC_URL}{request.get_full_path()}"
    try:
        # The form is read by the signature check and the lookup of the account's tokens: NUL or a
        # surrogate refused first (the request-limits middleware already refused them in the query).
        check_query_dict(request.POST)
    except ApplicationError as refused:
        body = error_body(refused.code, refused.message, refused.fields)
        return JsonResponse(body, status=refused.status_code)
    valid = twilio_status_record(
        url=url,
        params=request.POST.dict(),
        signature=request.headers.get("X-Twilio-Signature", ""),
        delivery_id=request.GET.get("delivery", ""),
    )
    return HttpResponse(status=204 if valid else 403)


@csrf_exempt
@require_POST
def sendgrid_events(request: HttpRequest) -> HttpResponse:
    try:
        outcome = sendgrid.sendgrid_events_record(
            body=request.body,
            signature=request.headers.get(sendgrid.SIGNATURE_HEADER, ""),
            timestamp=request.headers.get(sendgrid.TIMESTAMP_HEADER, ""),
        )
    except sendgrid.Refused as refused:
        metrics.PROVIDER_CALLBACKS.labels(provider=sendgrid.PROVIDER, outcome=refused.code).inc()
        return JsonResponse({"code": refused.code, "message": refused.message, "fields": {}}, status=refused.status)
    return JsonResponse({"applied": outcome.applied, "duplicates": outcome.duplicates, "ignored": outcome.ignored})
