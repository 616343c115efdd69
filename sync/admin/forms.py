"""The admin's broadcast form, checked by the shared validation rules.

Each field runs the same function the HTTP API and the WebSocket run, so a
broadcast the form accepts is one the API would accept, and the error shown
on the field is the one the API would answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms

from sync.core import validation
from sync.core.exceptions import SyncError
from sync.core.jsontext import loads_strict


def _checked(rule: Callable[..., Any], *args: Any, **options: Any) -> Any:
    """Run a validation rule; its error becomes the field's error."""
    try:
        return rule(*args, **options)
    except SyncError as error:
        raise forms.ValidationError(error.message, code=error.code) from None


def _parse_json(text: str) -> Any:
    try:
        return loads_strict(text)
    except SyncError as error:
        message = error.message.replace("The body is", "The payload is")
        raise forms.ValidationError(message, code=error.code) from None


class BroadcastForm(forms.Form):
    """Type, JSON payload and topics of one staff broadcast."""

    type = forms.CharField(
        max_length=64,
        help_text="For example announcement or system.maintenance; reserved "
        "types are allowed for staff.",
    )
    payload = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "cols": 70}),
        initial="{}",
        help_text="A JSON object, sent to clients as is.",
    )
    topics = forms.CharField(
        required=False,
        help_text="Comma-separated topic names; empty sends to everyone.",
    )

    def clean_type(self) -> str:
        return _checked(
            validation.validate_type, self.cleaned_data["type"], from_client=False
        )

    def clean_payload(self) -> dict[str, Any]:
        value = _parse_json(self.cleaned_data["payload"])
        _checked(validation.validate_payload, value, parsed=True)
        return value

    def clean_topics(self) -> tuple[str, ...]:
        return _checked(validation.parse_topic_list, self.cleaned_data["topics"])
