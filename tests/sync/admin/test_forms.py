"""The admin's broadcast form (sync/admin/forms.py): bad values are shown on
their fields and nothing is sent.
"""

from __future__ import annotations

import pytest

from sync.models import Broadcast
from tests.sync.admin.admin_pages import GREETING, SEND, stored_messages

# The broadcast form ----------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ('{"text": "hello"', "The payload is not valid JSON"),
        ("[1, 2]", "Payload must be a JSON object."),
        ('{"__proto__": {}}', "Payload keys __proto__"),
    ],
)
def test_a_bad_payload_is_shown_on_its_field_and_nothing_is_sent(
    staff_browser, payload, error
):
    for step in ({}, {"confirm": "1"}):  # a tampered confirmation too
        response = staff_browser.post(SEND, {**GREETING, "payload": payload, **step})

        assert response.status_code == 200
        assert error in str(response.context["form"].errors["payload"])
        assert 'class="form-row errors field-payload"' in response.content.decode()
    assert (stored_messages(), Broadcast.objects.count()) == (0, 0)


def test_a_bad_type_and_bad_topics_are_shown_on_their_fields(staff_browser):
    response = staff_browser.post(
        SEND, {"type": "no spaces", "payload": "{}", "topics": "a b", "confirm": "1"}
    )

    errors = response.context["form"].errors
    assert "Message type must match" in str(errors["type"])
    assert "Topics must be" in str(errors["topics"])
    assert stored_messages() == 0
