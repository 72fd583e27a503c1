"""Templates: validation (parse errors, undeclared variables) in the API and the admin form, versions,
archive and restore, locale fallback, sandboxed rendering, and preview."""

from __future__ import annotations

import json

import pytest

from apps.notifications import rendering
from apps.notifications.models import Template, TemplateVersion

pytestmark = pytest.mark.django_db

URL = "/api/v1/templates/"

BODY = {
    "key": "welcome",
    "name": "Welcome",
    "category": "onboarding",
    "variables": ["first_name", {"name": "plan", "required": False, "example": "pro"}],
    "default_channels": ["email"],
    "content": {
        "default": {
            "email": {
                "subject": "Welcome {{ first_name }}",
                "text": "Plan: {{ plan | default('free') }}",
                "html": "<p>Hello {{ first_name }}</p>",
            },
            "sms": {"text": "Hi {{ first_name }}"},
        },
        "fr": {"email": {"subject": "Bienvenue {{ first_name }}", "text": "Bonjour"}},
    },
}


def test_create_and_read_a_template(api):
    response = api.post(URL, BODY, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["key"], body["version"], body["category"], body["archived"]) == ("welcome", 1, "onboarding", False)
    assert body["variables"][0] == {"name": "first_name", "required": True, "example": None, "description": ""}
    assert api.get(f"{URL}welcome/").json()["content"] == BODY["content"]
    assert api.post(URL, BODY, format="json").status_code == 409


def test_an_undeclared_variable_is_refused_with_the_field_and_nothing_is_created(api):
    body = {**BODY, "content": {"default": {"email": {"subject": "Hi {{ frist_name }}", "text": "x"}}}}
    response = api.post(URL, body, format="json")
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "validation_error"
    assert "frist_name" in error["fields"]["content"]["default"]["email"]["subject"][0]
    assert not Template.objects.exists()


def test_content_that_does_not_parse_is_refused_with_the_line(api):
    body = {**BODY, "content": {"default": {"email": {"subject": "ok", "text": "line one\n{% if %}"}}}}
    error = api.post(URL, body, format="json").json()
    assert error["fields"]["content"]["default"]["email"]["text"][0].startswith("Line 2:")


@pytest.mark.parametrize(
    ("content", "path"),
    [
        ({"fr": {"sms": {"text": "x"}}}, ["non_field_errors"]),
        ({"default": {"fax": {"text": "x"}}}, ["default", "fax"]),
        ({"default": {"email": {"text": "no subject"}}}, ["default", "email", "subject"]),
        ({"default": {"email": {"subject": "s", "body": "x", "text": "t"}}}, ["default", "email", "body"]),
        ({"default": {"push": {"title": "t", "data": "not an object"}}}, ["default", "push", "data"]),
        ({"default": {"sms": {"text": "x"}}, "not a locale!": {"sms": {"text": "y"}}}, ["not a locale!"]),
    ],
)
def test_malformed_content_is_refused_field_by_field(api, content, path):
    error = api.post(URL, {**BODY, "default_channels": [], "content": content}, format="json").json()
    node = error["fields"]["content"]
    for step in path:
        node = node[step]
    assert node


def test_default_channels_need_default_content(api):
    error = api.post(URL, {**BODY, "default_channels": ["push"]}, format="json").json()
    assert "push" in error["fields"]["default_channels"][0]


def test_each_change_adds_an_immutable_version(api):
    api.post(URL, BODY, format="json")
    changed = api.patch(f"{URL}welcome/", {"name": "Welcome!"}, format="json").json()
    assert changed["version"] == 2 and changed["name"] == "Welcome!"
    unchanged = api.put(f"{URL}welcome/", {"name": "Welcome!"}, format="json").json()
    assert unchanged["version"] == 2  # nothing changed, nothing added
    bad = api.patch(f"{URL}welcome/", {"content": {"default": {"sms": {"text": "{{ oops }}"}}}}, format="json")
    assert bad.status_code == 400 and TemplateVersion.objects.filter(template__key="welcome").count() == 2
    versions = api.get(f"{URL}welcome/versions/").json()
    assert [v["version"] for v in versions["results"]] == [2, 1]
    assert api.get(f"{URL}welcome/versions/1/").json()["name"] == "Welcome"
    assert api.get(f"{URL}welcome/versions/9/").status_code == 404
    assert api.patch(f"{URL}welcome/", {"key": "renamed"}, format="json").status_code == 400


def test_delete_archives_and_restore_brings_it_back(api):
    api.post(URL, BODY, format="json")
    assert api.delete(f"{URL}welcome/").status_code == 204
    assert api.get(URL).json()["count"] == 0
    assert api.get(URL, {"archived": "true"}).json()["count"] == 1
    assert api.get(f"{URL}welcome/").json()["archived"] is True
    assert api.patch(f"{URL}welcome/", {"name": "x"}, format="json").status_code == 409
    restored = api.post(f"{URL}welcome/restore/")
    assert restored.status_code == 200 and restored.json()["archived"] is False
    assert api.get(URL).json()["count"] == 1
    assert TemplateVersion.objects.filter(template__key="welcome").count() == 1


def test_preview_renders_every_locale_and_channel(api):
    api.post(URL, BODY, format="json")
    body = api.post(f"{URL}welcome/preview/", {"data": {"first_name": "<Ada>"}}, format="json").json()
    assert body["version"] == 1
    email = body["rendered"]["default"]["email"]
    assert email["subject"] == "Welcome <Ada>"  # text is not escaped
    assert email["html"] == "<p>Hello &lt;Ada&gt;</p>"  # html is
    assert email["text"] == "Plan: pro"  # the declared example
    assert body["rendered"]["fr"]["email"]["subject"] == "Bienvenue <Ada>"
    assert body["rendered"]["default"]["sms"] == {"text": "Hi <Ada>"}


def test_locale_fallback_chain():
    assert rendering.locale_chain("fr-CA") == ["fr-ca", "fr", "default"]
    assert rendering.locale_chain("zh_Hant_TW") == ["zh-hant-tw", "zh-hant", "zh", "default"]
    assert rendering.locale_chain("") == ["default"]
    content = {
        "default": {"sms": {"text": "en"}, "email": {"subject": "en"}},
        "fr": {"sms": {"text": "fr"}},
        "fr-CA": {"sms": {"text": "qc"}},
    }
    assert rendering.channel_content(content, "sms", "fr-CA") == ("fr-ca", {"text": "qc"})
    assert rendering.channel_content(content, "sms", "fr-BE") == ("fr", {"text": "fr"})
    assert rendering.channel_content(content, "email", "fr-CA") == ("default", {"subject": "en"})
    assert rendering.channel_content(content, "push", "fr") is None


def test_rendering_is_sandboxed_and_strict():
    with pytest.raises(rendering.RenderError, match="Missing variable"):
        rendering.render_fields("sms", {"text": "{{ absent }}"}, {})
    with pytest.raises(rendering.RenderError, match="sandbox"):
        rendering.render_fields("sms", {"text": "{{ ''.__class__.__mro__ }}"}, {})


def test_admin_form_refuses_undeclared_variables_and_parse_errors(tenant):
    from apps.notifications.admin import TemplateAdminForm

    form = TemplateAdminForm(
        data={
            "tenant": tenant.pk,
            "key": "promo",
            "name": "Promo",
            "category_key": "marketing",
            "variables": '["code"]',
            "default_channels": '["sms"]',
            "content": json.dumps(
                {"default": {"sms": {"text": "Use {{ coupon }}"}, "email": {"subject": "{% if %}", "text": "x"}}}
            ),
        }
    )
    assert not form.is_valid()
    messages = " ".join(str(m) for m in form.errors["content"])
    assert "default.sms.text: Uses undeclared variable(s): coupon" in messages
    assert "default.email.subject: Line 1" in messages


def test_admin_creates_a_version_and_shows_a_preview(tenant, admin_client):
    response = admin_client.post(
        "/admin/notifications/template/add/",
        {
            "tenant": tenant.pk,
            "key": "promo",
            "name": "Promo",
            "category_key": "marketing",
            "description": "",
            "variables": '[{"name": "code", "example": "SAVE10"}]',
            "default_channels": '["sms"]',
            "content": json.dumps(
                {
                    "default": {
                        "sms": {"text": "Use {{ code }}"},
                        "email": {"subject": "Code", "html": "<b>{{ code }}</b>"},
                    }
                }
            ),
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    template = Template.objects.get(key="promo")
    assert template.current_version is not None and template.current_version.version == 1
    assert template.category.key == "marketing"
    page = admin_client.get(f"/admin/notifications/template/{template.pk}/change/").content.decode()
    assert "Use SAVE10" in page and "srcdoc" in page
