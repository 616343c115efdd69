"""Management commands of SPEC §7 (sync/management/commands/: sync_stats,
sync_purge, sync_publish, and their shared_store).

Through ``call_command`` (output and CommandError) and as real ``manage.py``
processes (exit code and output). With the in-memory store the commands
refuse with a plain notice; with Redis they act on the shared store (here
the test's own store object, under a key prefix of its own).
tests/e2e/test_commands.py runs them against a live server.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command, load_command_class

from harness.live_server import PROJECT_ROOT, child_env
from sync.models import Broadcast
from sync.services import get_realtime_sync, reset_services
from sync.services.realtime import build_message
from sync.store.redis import RedisMessageStore

IN_MEMORY = "in-memory message store lives inside the server process"
COMMANDS = {
    "sync_stats": [],
    "sync_purge": ["--all"],
    "sync_publish": ["--broadcast", "--type", "announcement", "--payload", "{}"],
}


HELP_OPTIONS = {
    "sync_stats": ["--json"],
    "sync_purge": ["--user", "--all", "--expired", "--dry-run"],
    "sync_publish": ["--user", "--broadcast", "--type", "--payload", "--topics"],
}


def run(*args: str) -> str:
    """call_command; what it printed."""
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


arun = sync_to_async(run)


def manage(*args: str, database) -> subprocess.CompletedProcess:
    """``manage.py <args>`` in a process of its own, with the embedded defaults."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=child_env(database, {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def stored_messages() -> int:
    return get_realtime_sync().store.stats().total_messages


# With the in-memory store, and bad arguments -----------------------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_with_the_in_memory_store_each_command_says_where_the_state_lives(command):
    with pytest.raises(CommandError, match=IN_MEMORY) as refused:
        run(command, *COMMANDS[command])

    assert "REDIS_URL" in str(refused.value)
    assert stored_messages() == 0  # nothing published into this process


def test_sync_purge_without_a_choice_explains_what_to_pass():
    with pytest.raises(CommandError, match="Say what to purge: --user ID"):
        run("sync_purge")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ("sync_purge --user 1 --all", "not allowed with argument"),
        ("sync_publish --type x --payload {}", "one of the arguments"),
        ("sync_publish --broadcast --payload {}", "--type"),
        (
            "sync_publish --user 1 --type x --payload {} --topics ops",
            "--topics goes with --broadcast",
        ),
    ],
)
def test_bad_arguments_are_command_errors(args, error):
    with pytest.raises(CommandError, match=error):
        run(*args.split())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help_text_for_each_option(command):
    parser = load_command_class("sync", command).create_parser("manage.py", command)

    shown = parser.format_help()
    assert "REDIS_URL" in shown
    for option in HELP_OPTIONS[command]:
        assert option in shown


def test_as_processes_the_commands_exit_non_zero_with_the_reason(tmp_path):
    database = tmp_path / "unused.sqlite3"
    argvs = [
        ("sync_purge", "--help"),
        ("sync_stats", "--json"),
        ("sync_purge", "--user", "1", "--all"),
    ]
    with ThreadPoolExecutor() as pool:  # each process starts Django: ~1 s
        shown, memory, bad = pool.map(lambda a: manage(*a, database=database), argvs)

    assert shown.returncode == 0, shown.stderr
    assert "manage.py sync_purge" in shown.stdout
    assert "--dry-run" in shown.stdout
    assert (memory.returncode, memory.stdout) == (1, "")
    assert IN_MEMORY in memory.stderr
    assert bad.returncode == 2
    assert "not allowed with argument --user" in bad.stderr


# With Redis: the shared store ---------------------------------------------------


@pytest.fixture
async def shared_store(redis_url, clock):
    """The service on a Redis store of this test's own, as with REDIS_URL."""
    prefix = f"test:commands:{uuid.uuid4().hex}:"
    store = RedisMessageStore(redis_url, prefix=prefix, clock=clock)
    reset_services(store)
    yield store
    await store.aclose()
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


async def test_sync_publish_reaches_the_users_socket(ws_connect, user, shared_store):
    socket, _ = await ws_connect(user)

    printed = await arun(
        "sync_publish", "--user", str(user.pk), "--type", "data.updated",
        "--payload", '{"section": "orders", "data": [1]}',
    )  # fmt: skip
    frame = json.loads((await socket.receive_output(2))["text"])

    assert (frame["type"], frame["userId"]) == ("data.updated", str(user.pk))
    assert frame["payload"] == {"section": "orders", "data": [1]}
    assert printed == f"Published {frame['id']} to user {user.pk}.\n"


async def test_sync_publish_spells_the_user_id_as_the_server_reads_it(
    ws_connect, user, shared_store
):
    socket, _ = await ws_connect(user)

    printed = await arun(
        "sync_publish", "--user", f" 0{user.pk}", "--type", "data.updated",
        "--payload", "{}",
    )  # fmt: skip
    frame = json.loads((await socket.receive_output(2))["text"])

    assert frame["userId"] == str(user.pk)
    assert printed == f"Published {frame['id']} to user {user.pk}.\n"


async def test_sync_purge_spells_the_user_id_as_the_server_reads_it(user, shared_store):
    await sync_to_async(add)(shared_store, str(user.pk), 1)

    purged = await arun("sync_purge", "--user", f"0{user.pk}")

    assert purged == f"Dropped 1 message from user {user.pk}'s queue.\n"


async def test_sync_publish_broadcasts_to_everyone_and_records_it(
    ws_connect, user, other_client, shared_store
):
    socket, _ = await ws_connect(user)

    printed = await arun(
        "sync_publish", "--broadcast", "--type", "announcement",
        "--payload", '{"text": "maintenance at 6"}',
    )  # fmt: skip
    frame = json.loads((await socket.receive_output(2))["text"])
    polled = await sync_to_async(other_client.get)("/api/sync/poll", {"since": 0})

    assert frame["payload"] == {"text": "maintenance at 6"}
    assert [m["id"] for m in polled.json()["messages"]] == [frame["id"]]
    assert printed == f"Broadcast {frame['id']} to everyone.\n"
    record = await Broadcast.objects.aget()
    assert (record.message_id, record.source, record.sent_by_id) == (
        frame["id"],
        "command",
        None,
    )


async def test_sync_publish_sends_topic_broadcasts_to_their_subscribers(
    ws_connect, user, other_user, shared_store
):
    ops, _ = await ws_connect(user, query="topics=ops")
    others, _ = await ws_connect(other_user)

    printed = await arun(
        "sync_publish", "--broadcast", "--type", "system.notice",
        "--payload", "{}", "--topics", "ops,hr",
    )  # fmt: skip
    frame = json.loads((await ops.receive_output(2))["text"])

    assert frame["topics"] == ["ops", "hr"]
    assert await others.receive_nothing(0.3)
    assert printed.endswith(" to ops, hr.\n")


PUBLISH_TO_USER = ["--user", "USER", "--type", "item.added", "--payload"]
# Arguments, and what the error says; USER stands for an existing user's id.
BAD_PUBLISH = [
    ([*PUBLISH_TO_USER, '{"n": '], "--payload is not valid JSON"),
    ([*PUBLISH_TO_USER, "[1]"], "--payload: Payload must be a JSON object"),
    ([*PUBLISH_TO_USER, '{"constructor": 1}'], "--payload: Payload keys"),
    (["--user", "USER", "--type", "two words", "--payload", "{}"], "--type: "),
    (["--user", "999999", "--type", "x", "--payload", "{}"], "no user has id"),
    (["--user", "alice", "--type", "x", "--payload", "{}"], "no user has id"),
    (["--broadcast", "--topics", "a;b", "--type", "x", "--payload", "{}"], "--topics"),
]


async def test_sync_publish_refuses_bad_input_and_sends_nothing(user, shared_store):
    for args, error in BAD_PUBLISH:
        with pytest.raises(CommandError, match=error):
            await arun(
                "sync_publish", *(str(user.pk) if a == "USER" else a for a in args)
            )

    assert await sync_to_async(stored_messages)() == 0
    assert await Broadcast.objects.acount() == 0


def add(store, user_id: str | None, number: int) -> None:
    message = build_message("item.added", {"n": number}, user_id=user_id)
    store.add_message(message)


async def test_sync_stats_prints_the_shared_figures(ws_connect, user, shared_store):
    await ws_connect(user)
    # "ghost": a queue of no user (an id of another user model, say).
    queues = ["ghost", "ghost", "ghost", user.pk, user.pk, None]
    for number, user_id in enumerate(queues):
        await sync_to_async(add)(shared_store, user_id, number)

    printed = await arun("sync_stats")
    figures = json.loads(await arun("sync_stats", "--json"))

    assert printed.splitlines()[:7] == [
        "Store: redis",
        "WebSocket connections: 1 open, 1 opened since start, 0 topic subscriptions",
        "Queues: 3 holding 6 messages",
        "Largest queues:",
        "  user ghost               3",
        f"  user {user.pk} (alice)".ljust(27) + "2",
        "  broadcasts               1",
    ]
    assert figures["status"]["polling"]["messages"] == 6
    assert figures["queues"]["largest"] == [
        {"queue": "ghost", "messages": 3, "username": None},
        {"queue": str(user.pk), "messages": 2, "username": "alice"},
        {"queue": "broadcast", "messages": 1, "username": None},
    ]
    assert "thisProcess" not in figures  # a command's process serves no socket


async def test_sync_purge_drops_what_it_says_and_a_dry_run_nothing(
    db, shared_store, clock, sync_config
):
    sync_config(MESSAGE_TTL=10)
    for user_id, number in (("7", 1), ("7", 2), ("8", 3), (None, 4)):
        await sync_to_async(add)(shared_store, user_id, number)
    clock.advance(11)  # all four expired, none swept yet
    await sync_to_async(add)(shared_store, "8", 5)

    dry = await arun("sync_purge", "--user", "7", "--dry-run")
    one_user = await arun("sync_purge", "--user", "7")
    expired = await arun("sync_purge", "--expired")
    everything = await arun("sync_purge", "--all", "--dry-run")

    assert dry == "Would drop 2 messages from user 7's queue (dry run).\n"
    assert one_user == "Dropped 2 messages from user 7's queue.\n"
    assert expired == "Dropped 2 expired messages from every queue.\n"
    assert everything == "Would drop 1 message from every queue (dry run).\n"
    assert await arun("sync_purge", "--all") == "Dropped 1 message from every queue.\n"
    assert await sync_to_async(stored_messages)() == 0


def test_an_unreachable_store_is_a_command_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nobody = probe.getsockname()[1]  # closed again: nothing listens
    store = RedisMessageStore(f"redis://127.0.0.1:{nobody}/0")
    reset_services(store)
    try:
        with pytest.raises(CommandError, match="The message store is unavailable"):
            run("sync_purge", "--all")
    finally:
        store.close()
