"""Email bodies rendered per recipient carry a skeleton (text with tokens where the recipient's values
went) only when that is exact: plain lookups, no filters or logic, no value that looks like a token.
The render itself (and its budgets) is the recipient's own, as before."""

from __future__ import annotations

import pytest

from apps.notifications.rendering import RenderedText, render_fields
from apps.notifications.template_sandbox import TemplateBudgetExceeded

CONTEXT = {"order": "A-7", "recipient": {"name": "Bob & <Carol>", "data": {"city": "Lyon"}}}


def test_plain_lookups_render_the_recipients_text_with_a_skeleton_of_it():
    rendered = render_fields(
        "email",
        {
            "subject": "Hi {{ recipient.name }}",
            "text": "Hi {{ recipient.name }}, order {{ order }} goes to {{ recipient.data.city }}.",
            "html": "<p>Hi {{ recipient.name }}</p>",
        },
        CONTEXT,
    )

    text, html = rendered["text"], rendered["html"]
    assert text == "Hi Bob & <Carol>, order A-7 goes to Lyon."
    assert isinstance(text, RenderedText) and isinstance(html, RenderedText)
    assert text.skeleton == "Hi -sbx-t0-, order A-7 goes to -sbx-t1-."
    assert text.values == {"-sbx-t0-": "Bob & <Carol>", "-sbx-t1-": "Lyon"}
    assert html == "<p>Hi Bob &amp; &lt;Carol&gt;</p>"
    assert html.skeleton == "<p>Hi -sbx-h0-</p>" and html.values == {"-sbx-h0-": "Bob &amp; &lt;Carol&gt;"}
    assert not isinstance(rendered["subject"], RenderedText)  # sent per recipient, whole


@pytest.mark.parametrize(
    "source",
    [
        "Hi {{ recipient.name | upper }}",
        "{% if recipient.name %}Hi {{ recipient.name }}{% endif %}",
        "Hi {{ recipient.name ~ '!' }}",
        "Order {{ order }} shipped",  # no recipient value: one rendering is shared anyway
        "Hi {{ recipient.name }}, see -sbx-t0-",  # a literal that looks like a token
    ],
)
def test_anything_but_plain_recipient_lookups_has_no_skeleton(source: str):
    rendered = render_fields("email", {"subject": "s", "text": source}, CONTEXT)

    assert not isinstance(rendered["text"], RenderedText)


def test_a_value_that_looks_like_a_token_has_no_skeleton():
    context = {**CONTEXT, "recipient": {"name": "-sbx-t0-"}}

    rendered = render_fields("email", {"subject": "s", "text": "Hi {{ recipient.name }}"}, context)

    assert rendered["text"] == "Hi -sbx-t0-" and not isinstance(rendered["text"], RenderedText)


def test_budgets_still_apply_to_each_recipients_render():
    context = {**CONTEXT, "recipient": {"name": "x" * 2000}}

    with pytest.raises(TemplateBudgetExceeded):
        render_fields("email", {"subject": "Hi {{ recipient.name }}", "text": "t"}, context)
