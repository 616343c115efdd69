"""The protocol's numbers and names agree with the client's copies and the README.

``sync.core.protocol`` defines the close codes, frame types and error codes
once for the server. The TypeScript client (client/src, and its committed
build in sync/static/sync, which Python-only users serve as is) keeps its
own copies, and the README documents them: the tests below read all three as
text (no Node.js needed) and fail when they drift apart.

The client has no list of error codes: it matches a few of the server's
(``error.code === "invalid_cursor"``) and makes up its own for failures on its
side (``new SyncError("timeout", …)``). So the checks are that every code it
matches is one the server sends, and that none of its own could be taken for
one of the server's.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sync.core.protocol import CloseCode, ErrorCode, FrameType, error_body

PROJECT_ROOT = Path(__file__).resolve().parents[3]
CLIENT_SOURCES = {
    "source": PROJECT_ROOT / "client" / "src" / "connection-manager.ts",
    "build": PROJECT_ROOT / "sync" / "static" / "sync" / "connection-manager.js",
}
README = PROJECT_ROOT / "README.md"

# Close codes a server may put in a close frame (RFC 6455 §7.4): the
# registered ones that are not reserved for reporting, and the private range.
SENDABLE_CLOSE_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}
PRIVATE_CLOSE_CODES = range(4000, 5000)


def client_text(which: str) -> str:
    return CLIENT_SOURCES[which].read_text(encoding="utf-8")


def named_close_codes(text: str) -> dict[str, int]:
    """``const CLOSE_<NAME> = <number>;`` -> {NAME: number}."""
    found = re.findall(r"^const CLOSE_([A-Z_]+) = (\d+);", text, re.MULTILINE)
    return {name: int(number) for name, number in found}


def number_set(text: str, name: str) -> set[int]:
    """The numbers of ``const <name> = new Set([…]);``."""
    match = re.search(rf"^const {name} = new Set\(\[([\d,\s]*)\]\);", text, re.M)
    assert match, f"no `const {name} = new Set([...])` in the client"
    return {int(number) for number in re.findall(r"\d+", match[1])}


def permanent_close_codes(text: str, named: dict[str, int]) -> set[int]:
    """Codes ``permanentReason`` turns into a final failure (no retry)."""
    match = re.search(r"^function permanentReason\(.*?^\}", text, re.M | re.S)
    assert match, "no permanentReason function in the client"
    return {named[name] for name in re.findall(r"code === CLOSE_([A-Z_]+)", match[0])}


def matched_error_codes(text: str) -> set[str]:
    """String codes the client compares an error's code with."""
    comparisons = re.findall(
        r"(?<![\w.])(?<!typeof )([A-Za-z_][\w.]*) [!=]== \"([a-z_]+)\"", text
    )
    compared = {value for name, value in comparisons if re.search(r"[cC]ode$", name)}
    refusals = re.search(r"^const TOPIC_REFUSALS = new Set\(\[(.*?)\]\);", text, re.M)
    assert refusals, "no TOPIC_REFUSALS set in the client"
    return compared | set(re.findall(r"\"([a-z_]+)\"", refusals[1]))


def own_error_codes(text: str) -> set[str]:
    """Codes the client makes up itself: ``new SyncError("<code>", …)``."""
    return set(re.findall(r"new SyncError\(\"([a-z_]+)\"", text))


def readme_paragraph(starts_with: str) -> str:
    """The README paragraph (up to a blank line) that starts with the words."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(starts_with)}.*?(?=\n\n)", text, re.M | re.S)
    assert match, f"no README paragraph starting with {starts_with!r}"
    return match[0]


# The server's own numbers ---------------------------------------------------


def test_close_codes_are_ones_a_server_may_send():
    for code in CloseCode:
        assert code in SENDABLE_CLOSE_CODES or code in PRIVATE_CLOSE_CODES, code


def test_codes_and_frame_types_are_unique_stable_strings():
    for enum in (CloseCode, ErrorCode, FrameType):
        # An alias (a second name for a value) would not be iterated.
        assert len(enum.__members__) == len(enum), enum
    for code in ErrorCode:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", code), code


# The client's copies ----------------------------------------------------------


@pytest.mark.parametrize("which", CLIENT_SOURCES)
def test_the_clients_named_close_codes_have_the_servers_numbers(which):
    named = named_close_codes(client_text(which))
    shared = {name for name in named if name in CloseCode.__members__}

    assert shared >= {"NORMAL", "UNAUTHENTICATED", "BAD_REQUEST", "FORBIDDEN_TOPIC"}
    for name in shared:
        assert named[name] == CloseCode[name], f"CLOSE_{name}"
    # The client's own codes (CLOSE_CLIENT_TIMEOUT) mean nothing to the server
    # and must not be mistaken for one of its codes in the logs.
    for name in named.keys() - shared:
        assert named[name] not in set(CloseCode), f"CLOSE_{name} = {named[name]}"


@pytest.mark.parametrize("which", CLIENT_SOURCES)
def test_the_client_classifies_every_server_close_code(which):
    """Each code is exactly one of: the client's own normal close, a refusal
    not to retry (permanentReason), or a deliberate close by a server whose
    socket worked (SERVER_CLOSE_CODES: reconnect, no fallback to polling)."""
    text = client_text(which)
    named = named_close_codes(text)
    permanent = permanent_close_codes(text, named)
    deliberate = number_set(text, "SERVER_CLOSE_CODES")
    normal = {named["NORMAL"]}

    assert permanent == {
        CloseCode.UNAUTHENTICATED,
        CloseCode.FORBIDDEN_TOPIC,
        CloseCode.BAD_REQUEST,
    }
    assert not (permanent & deliberate), "a code both final and retried"
    assert normal.isdisjoint(permanent | deliberate)
    assert deliberate <= set(CloseCode), "the client expects codes never sent"
    assert normal | permanent | deliberate == set(CloseCode), "unclassified codes"


@pytest.mark.parametrize("which", CLIENT_SOURCES)
def test_the_error_codes_the_client_matches_are_the_servers(which):
    text = client_text(which)
    own = own_error_codes(text)
    server = matched_error_codes(text) - own

    assert {"invalid_cursor", "forbidden_topic", "invalid_topics"} <= server
    assert server <= set(ErrorCode), "the client waits for codes never sent"
    # connection_lost, timeout, disconnected…: never one of the server's.
    assert {"connection_lost", "timeout", "network_error"} <= own
    assert not (own & set(ErrorCode)), "a client code reads as the server's"


@pytest.mark.parametrize("which", CLIENT_SOURCES)
def test_the_frame_types_the_client_reads_and_sends_are_the_servers(which):
    text = client_text(which)
    read = set(re.findall(r"frame\.type === \"([a-z._]+)\"", text))
    sent = set(re.findall(r"sendFrame\(\{ type: \"([a-z._]+)\"", text))
    sent |= set(re.findall(r"changeTopics\(\"([a-z]+)\"", text))  # its `type`

    assert read == {FrameType.ESTABLISHED, FrameType.PING, FrameType.ERROR}
    assert sent == {FrameType.PING, FrameType.PONG, "subscribe", "unsubscribe"}
    assert sent <= set(FrameType)


# The README -----------------------------------------------------------------


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda code: code.name)
def test_the_readme_lists_every_close_code(code):
    listed = readme_paragraph("Close codes:")

    assert re.search(rf"\b{int(code)}\b", listed), f"{int(code)} ({code.name})"


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda code: code.value)
def test_the_readme_lists_every_error_code(code):
    listed = readme_paragraph("Codes:")

    assert f"`{code}`" in listed


def test_the_readme_names_no_close_or_error_code_the_server_lacks():
    close_listed = readme_paragraph("Close codes:")
    codes_listed = readme_paragraph("Codes:")

    numbers = {int(n) for n in re.findall(r"\b(1\d{3}|4\d{3})\b", close_listed)}
    numbers -= {4096}  # "SYNC_MAX_PAYLOAD_BYTES + 4096": a size, not a code
    assert numbers <= set(CloseCode)
    assert set(re.findall(r"`([a-z_]+)`", codes_listed)) <= set(ErrorCode)


# The error envelope -----------------------------------------------------------


def test_error_body_is_the_readmes_error_shape():
    """The README's example, built by error_body, is byte for byte the same."""
    text = README.read_text(encoding="utf-8")
    after = text.split("Every error has one shape", 1)[1]
    example = re.search(r"```json\n(.*?)\n```", after, re.S)
    assert example, "no JSON example after 'Every error has one shape'"

    body = error_body(ErrorCode.INVALID_TYPE, "…")

    assert body == json.loads(example[1])
    assert json.dumps(body, ensure_ascii=False) == example[1]


def test_error_body_carries_a_plain_code_and_its_details():
    details = {"field": "cursor"}

    body = error_body(ErrorCode.INVALID_CURSOR, "Bad cursor.", details)

    assert body == {
        "success": False,
        "error": {
            "code": "invalid_cursor",
            "message": "Bad cursor.",
            "details": {"field": "cursor"},
        },
    }
    assert type(body["error"]["code"]) is str  # not the enum: logs, orjson, DRF


def test_error_bodies_without_details_share_no_dict():
    first = error_body("throttled", "Slow down.")
    first["error"]["details"]["retryAfter"] = 3

    assert error_body("throttled", "Slow down.")["error"]["details"] == {}
