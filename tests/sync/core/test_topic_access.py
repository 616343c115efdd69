"""The topic authorizer hook (sync/core/topic_access.py, SYNC_TOPIC_AUTHORIZER).

Without it topics are plain filters; with it, every subscription asks it
about every topic, and one refusal is a 403 `forbidden_topic`.
"""

from __future__ import annotations

import pytest

from sync.core import topic_access
from sync.core.exceptions import ForbiddenTopic
from sync.core.topic_access import aauthorize_topics, authorize_topics
from tests.sync.http.api_calls import POLL, assert_error, broadcast, poll

HERE = __name__
# (username, topic) of every question the authorizers below were asked.
ASKED: list[tuple[str, str]] = []


def no_secrets(user, topic: str) -> bool:
    """Everyone may follow anything but topics starting with "secret"."""
    ASKED.append((user.username, topic))
    return not topic.startswith("secret")


def staff_only(user, topic: str) -> bool:
    ASKED.append((user.username, topic))
    return bool(user.is_staff)


@pytest.fixture(autouse=True)
def forget_questions():
    ASKED.clear()
    yield
    ASKED.clear()


@pytest.fixture
def authorizer(sync_config):
    """Install an authorizer of this module by name: ``authorizer("no_secrets")``."""

    def install(name: str) -> None:
        sync_config(TOPIC_AUTHORIZER=f"{HERE}.{name}")

    return install


# The functions ------------------------------------------------------------------


def test_without_an_authorizer_every_topic_is_open(user):
    authorize_topics(user, ["secret", "ops"])


def test_a_refused_topic_raises_forbidden_topic_naming_it(user, authorizer):
    authorizer("no_secrets")
    with pytest.raises(ForbiddenTopic) as caught:
        authorize_topics(user, ["ops", "secret-plans", "news"])
    assert caught.value.code == "forbidden_topic"
    assert caught.value.status_code == 403
    assert caught.value.details == {"topic": "secret-plans"}
    assert ASKED == [("alice", "ops"), ("alice", "secret-plans")]


def test_allowed_topics_pass(user, authorizer):
    authorizer("no_secrets")
    authorize_topics(user, ["ops", "news"])
    assert ASKED == [("alice", "ops"), ("alice", "news")]


def test_a_changed_setting_is_honoured(user, staff, authorizer):
    authorizer("no_secrets")
    authorize_topics(user, ["ops"])
    authorizer("staff_only")
    with pytest.raises(ForbiddenTopic):
        authorize_topics(user, ["ops"])
    authorize_topics(staff, ["ops"])


def test_a_bad_dotted_path_fails_loudly(user, sync_config):
    sync_config(TOPIC_AUTHORIZER=f"{HERE}.no_such_function")
    with pytest.raises(ImportError):
        authorize_topics(user, ["ops"])


async def test_async_twin_refuses_like_the_sync_one(user, authorizer):
    authorizer("no_secrets")
    await aauthorize_topics(user, ["ops"])
    with pytest.raises(ForbiddenTopic):
        await aauthorize_topics(user, ["secret"])


async def test_async_twin_stays_on_the_event_loop_without_an_authorizer(
    user, monkeypatch
):
    def no_thread_hop(*args, **kwargs):
        raise AssertionError("sync_to_async used without an authorizer")

    monkeypatch.setattr(topic_access, "sync_to_async", no_thread_hop)
    await aauthorize_topics(user, ["ops", "secret"])


async def test_async_twin_asks_nothing_for_no_topics(user, authorizer):
    authorizer("staff_only")
    await aauthorize_topics(user, [])
    assert ASKED == []


# Polling with topics= -----------------------------------------------------------


def test_poll_naming_a_refused_topic_is_403_forbidden_topic(api_client, authorizer):
    authorizer("no_secrets")
    response = api_client.get(POLL, {"topics": "ops,secret"})
    error = assert_error(response, 403, "forbidden_topic")
    assert error["details"] == {"topic": "secret"}


def test_poll_with_allowed_topics_sees_their_broadcasts(
    api_client, staff_client, authorizer
):
    authorizer("no_secrets")
    broadcast(staff_client, {"type": "news", "topics": ["ops"]})
    messages = poll(api_client, topics="ops")["messages"]
    assert [message["topics"] for message in messages] == [["ops"]]
    assert ("alice", "ops") in ASKED


def test_refused_topic_broadcasts_never_reach_the_poller(
    api_client, staff_client, authorizer
):
    authorizer("staff_only")
    broadcast(staff_client, {"type": "news", "topics": ["ops"]})
    assert_error(api_client.get(POLL, {"topics": "ops"}), 403, "forbidden_topic")
    assert poll(staff_client, topics="ops")["count"] == 1


def test_poll_without_topics_does_not_ask_the_authorizer(api_client, authorizer):
    authorizer("staff_only")
    assert poll(api_client)["messages"] == []
    assert ASKED == []


def test_publishing_to_a_topic_is_not_a_subscription(staff_client, authorizer):
    # Staff broadcasts name topics as a filter; the hook is for readers.
    authorizer("no_secrets")
    response = broadcast(staff_client, {"type": "news", "topics": ["secret"]})
    assert response.status_code == 201
    assert ASKED == []
