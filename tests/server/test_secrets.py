"""Secrets end to end: set, list, delete; declared per version; never read back, never stored.

A real server with a TOOLVAULT_SECRETS_KEY runs on each database backend. The attacks
here are a caller's: reading a value back through any response or the history, from
another namespace, from a version that did not declare it, or from the database itself.
Each asserts that the value is nowhere to be found, not merely that a call failed.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet

from tests.conftest import TOOLVAULT, ServerProcess
from tests.server import ACTOR
from toolvault.client import (
    Client,
    Execution,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from toolvault.server.db.engine import Database
from toolvault.server.services.secrets import Secrets

# A quote, a backslash and non-ASCII: the JSON-escaped form differs from the raw one.
VALUE = 'sk-"live"\\ключ-0123456789'
# What the raw database is searched for: every text form of VALUE that could be stored.
FORMS = (VALUE, json.dumps(VALUE)[1:-1], json.dumps(VALUE, ensure_ascii=False)[1:-1])

LEAKY = """\
from toolvault import secrets

def main(mode: str = "return", echo: str = ""):
    value = secrets["API_KEY"]
    print("the key is", value, repr(value))
    if mode == "raise":
        raise ValueError("rejected key " + value)
    return {"key": value, value: [value, "plain"], "echo": echo}
"""
# Which value a call saw, without the value itself (which redaction would hide).
DIGEST = """\
import hashlib
from toolvault import secrets

def main():
    return hashlib.sha256(secrets["API_KEY"].encode()).hexdigest()
"""


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def key_env(*keys: bytes) -> dict[str, str]:
    return {"TOOLVAULT_SECRETS_KEY": ",".join(key.decode() for key in keys)}


@pytest.fixture
def secrets_server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server with a secrets key on each database backend."""
    server = ServerProcess(
        db=db_url, data_dir=tmp_path / "data", env=key_env(Fernet.generate_key())
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(secrets_server: ServerProcess) -> Iterator[Client]:
    with Client(secrets_server.address, retries=False) as client:
        yield client


def texts(execution: Execution) -> str:
    """Everything an execution shows a caller, as one text."""
    error = execution.error
    return "\n".join(
        (
            execution.result_json,
            execution.args_json,
            execution.stdout,
            execution.stderr,
            error.type if error else "",
            error.message if error else "",
            error.traceback if error else "",
        )
    )


def assert_no_value(text: str) -> None:
    for form in FORMS:
        assert form not in text


def test_secrets_are_set_listed_and_deleted_and_no_reply_holds_a_value(client: Client) -> None:
    secret, created = client.set_secret("team/API_KEY", VALUE)
    assert (secret.name, created, secret.updated_by) == ("team/API_KEY", True, "anonymous")
    again, created = client.set_secret("team/API_KEY", VALUE + "-2")
    assert (again.name, created, again.created_at) == ("team/API_KEY", False, secret.created_at)
    assert again.updated_at >= secret.updated_at
    client.set_secret("OTHER_KEY", "other-value")
    assert [s.name for s in client.list_secrets()] == ["OTHER_KEY", "team/API_KEY"]
    assert [s.name for s in client.list_secrets(namespace="team")] == ["team/API_KEY"]
    assert_no_value(repr(client.list_secrets()))
    client.delete_secret("team/API_KEY")
    assert [s.name for s in client.list_secrets()] == ["OTHER_KEY"]
    with pytest.raises(NotFound, match="secret 'team/API_KEY' not found"):
        client.delete_secret("team/API_KEY")
    events = client.audit_events(action="secret.set") + client.audit_events(action="secret.delete")
    assert sorted((e.action, e.target) for e in events) == [
        ("secret.delete", "team/API_KEY"),
        ("secret.set", "OTHER_KEY"),
        ("secret.set", "team/API_KEY"),
        ("secret.set", "team/API_KEY"),
    ]
    assert_no_value(repr(events))
    assert "other-value" not in repr(events)


def test_every_bad_name_or_value_is_refused_naming_the_problem(client: Client) -> None:
    refused = {
        ("api_key", "abcd"): "name 'api_key' is invalid",
        ("9KEY", "abcd"): "name '9KEY' is invalid",
        ("Team/KEY", "abcd"): "name 'Team/KEY' is invalid",
        ("default/KEY", "abcd"): "the default namespace is written without a prefix",
        ("K" * 65, "abcd"): "is invalid",
        ("KEY", "abc"): "value is 3 bytes, fewer than the minimum of 4",
        ("KEY", "x" * (64 * 1024 + 1)): "value is 65537 bytes, more than the limit of 65536",
        ("KEY", "ab\x00cd"): "value contains a NUL character",
    }
    for (name, value), message in refused.items():
        with pytest.raises(InvalidArgument, match=message):
            client.set_secret(name, value)
    assert client.list_secrets() == []
    with pytest.raises(InvalidArgument, match="secrets name 'team/API_KEY' is invalid"):
        client.publish("team/f", DIGEST, secrets=["team/API_KEY"])
    with pytest.raises(InvalidArgument, match="secrets name 'api_key' is invalid"):
        client.publish("f", DIGEST, secrets=["api_key"])


def test_a_function_that_prints_returns_and_raises_the_value_shows_only_stars(
    client: Client,
) -> None:
    client.set_secret("API_KEY", VALUE)
    version = client.publish("leaky", LEAKY, secrets=["API_KEY"])
    assert version.secrets == ("API_KEY",)
    returned = client.invoke("leaky", {"echo": VALUE})
    assert returned.ok, returned.error
    # Still valid JSON, with every string that held the value redacted.
    assert returned.result == {"key": "***", "***": ["***", "plain"], "echo": "***"}
    assert returned.args == {"echo": "***"}
    assert returned.stdout == "the key is *** '***'\n"
    raised = client.invoke("leaky", {"mode": "raise"})
    assert raised.error is not None
    assert (raised.error.type, raised.error.message) == ("ValueError", "rejected key ***")
    assert "rejected key ***" in raised.error.traceback
    recorded = [client.execution(returned.execution_id), client.execution(raised.execution_id)]
    listed = client.history("leaky")
    for execution in (returned, raised, *recorded, *listed):
        assert_no_value(texts(execution))
    assert recorded[0].result == returned.result
    assert {e.execution_id for e in listed} == {returned.execution_id, raised.execution_id}


def test_a_file_the_function_leaves_holds_only_stars(client: Client) -> None:
    source = (
        "from toolvault import secrets\n"
        "def main():\n"
        "    with open('out/key.txt', 'w') as file:\n"
        "        file.write('key=' + secrets['API_KEY'] + '\\n')\n"
    )
    client.set_secret("API_KEY", VALUE)
    client.publish("writer", source, secrets=["API_KEY"])

    written = client.invoke("writer")

    assert written.ok, written.error
    assert written.output_files == {"key.txt": b"key=***\n"}
    kept = client.execution(written.execution_id, include_files=True)
    assert kept.output_files == {"key.txt": b"key=***\n"}
    (described,) = kept.files
    assert described.size == len(b"key=***\n")


def test_replays_and_cached_results_are_redacted_too(client: Client) -> None:
    client.set_secret("API_KEY", VALUE)
    client.publish("cached", LEAKY, secrets=["API_KEY"], deterministic=True)
    first = client.invoke("cached", idempotency_key="once")
    replay = client.invoke("cached", idempotency_key="once")
    cached = client.invoke("cached")
    assert (replay.execution_id, cached.cached) == (first.execution_id, True)
    for execution in (first, replay, cached):
        assert execution.result["key"] == "***"
        assert_no_value(texts(execution))


def test_a_secret_of_one_namespace_is_invisible_to_a_function_of_another(client: Client) -> None:
    client.set_secret("blue/API_KEY", VALUE)
    client.publish("blue/reader", LEAKY, secrets=["API_KEY"])
    client.publish("green/reader", LEAKY, secrets=["API_KEY"])
    with pytest.raises(FailedPrecondition) as refused:
        client.invoke("green/reader")
    assert refused.value.details == (
        "the version declares secrets that are not set in namespace 'green': API_KEY "
        "(set them with `toolvault secrets set`)"
    )
    # Nothing ran, so nothing was recorded; blue's calls still get blue's value.
    assert client.history("green/reader") == []
    assert client.invoke("blue/reader").result["key"] == "***"


def test_a_version_that_did_not_declare_a_secret_cannot_get_it(client: Client) -> None:
    client.set_secret("API_KEY", VALUE)
    client.set_secret("ROOT_KEY", "root-value-0123")
    with pytest.raises(InvalidArgument, match="only a version that declares secrets may import"):
        client.publish("undeclared", LEAKY)
    # Declared API_KEY only: ROOT_KEY is not in its mapping, nor anywhere in the call.
    source = LEAKY.replace('secrets["API_KEY"]', 'secrets["ROOT_KEY"]')
    client.publish("other_name", source, secrets=["API_KEY"])
    execution = client.invoke("other_name")
    assert execution.error is not None
    assert (execution.error.type, execution.error.message) == ("KeyError", "'ROOT_KEY'")
    assert "root-value-0123" not in texts(execution)


def test_a_declared_secret_need_not_exist_to_publish_and_deleting_it_stops_the_calls(
    client: Client,
) -> None:
    client.publish("later", DIGEST, secrets=["API_KEY"])
    with pytest.raises(FailedPrecondition, match="not set in namespace 'default': API_KEY"):
        client.invoke("later")
    client.set_secret("API_KEY", VALUE)
    assert client.invoke("later").result == digest(VALUE)
    client.delete_secret("API_KEY")
    with pytest.raises(FailedPrecondition, match="API_KEY"):
        client.invoke("later")


def test_a_value_set_again_reaches_the_next_call_and_no_cached_result_of_the_old(
    client: Client,
) -> None:
    client.publish("digest", DIGEST, secrets=["API_KEY"])
    client.publish("digest_cached", DIGEST, secrets=["API_KEY"], deterministic=True)
    for value in ("first-value", "second-value"):
        client.set_secret("API_KEY", value)
        # Twice each: the second call of the warm worker, and a cache hit, see it too.
        for _ in range(2):
            assert client.invoke("digest").result == digest(value)
            assert client.invoke("digest_cached").result == digest(value)


def test_declared_names_are_part_of_the_content_and_its_hash(client: Client) -> None:
    plain = client.publish("hashed", "def main():\n    return 1\n")
    declared = client.publish("hashed", DIGEST, secrets=["B_KEY", "API_KEY", "B_KEY"])
    assert declared.secrets == ("API_KEY", "B_KEY")
    assert plain.secrets == ()
    reordered = client.publish("hashed", DIGEST, secrets=["API_KEY", "B_KEY"])
    assert (reordered.created, reordered.sha256) == (False, declared.sha256)
    assert client.get("hashed@2").secrets == ("API_KEY", "B_KEY")


def stored_text(server: ServerProcess) -> str:
    """Everything the database holds, as text: the SQLite files' bytes, or every row."""
    if server.db.startswith("sqlite"):
        files = sorted(server.data_dir.parent.glob("toolvault.db*"))
        assert files
        return "".join(path.read_bytes().decode("utf-8", "replace") for path in files)
    rows = []
    with psycopg.connect(server.db.replace("+psycopg", "")) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
        assert ("secrets",) in tables
        for (table,) in tables:
            # Each column as plain text: no quoting that could hide a match.
            columns = [
                name
                for (name,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema() AND table_name = %s",
                    (table,),
                )
            ]
            for column in columns:
                for (cell,) in conn.execute(f'SELECT "{column}"::text FROM "{table}"'):
                    rows.append(cell or "")
    return "\n".join(rows)


def test_the_database_never_holds_a_value_in_plain_text(
    secrets_server: ServerProcess, client: Client
) -> None:
    client.set_secret("API_KEY", VALUE)
    client.publish("leaky", LEAKY, secrets=["API_KEY"])
    client.invoke("leaky", {"echo": VALUE})
    client.invoke("leaky", {"mode": "raise"})
    stored = stored_text(secrets_server)
    assert "rejected key ***" in stored  # the history is there, redacted
    assert_no_value(stored)


def rotate(db: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TOOLVAULT, "secrets", "rotate", "--db", db],
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin"},
        timeout=120,
    )


def test_keys_rotate_add_the_new_first_re_encrypt_then_drop_the_old(
    db_url: str, tmp_path: Path
) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    server = ServerProcess(db=db_url, data_dir=tmp_path / "data", env=key_env(old))

    def call_with(env: dict[str, str]) -> Any:
        server.env = env
        server.start()
        try:
            with Client(server.address, retries=False) as client:
                return client.invoke("digest").result
        except FailedPrecondition as error:
            return error.details
        finally:
            server.stop()

    server.start()
    try:
        with Client(server.address, retries=False) as client:
            client.set_secret("API_KEY", VALUE)
            client.publish("digest", DIGEST, secrets=["API_KEY"])
    finally:
        server.stop()
    # Without the old key the value cannot be read, and the call says why.
    assert "cannot be decrypted with the keys of TOOLVAULT_SECRETS_KEY" in call_with(key_env(new))
    # The new key first: the old one still decrypts.
    assert call_with(key_env(new, old)) == digest(VALUE)
    done = rotate(db_url, key_env(new, old))
    assert (done.returncode, done.stdout) == (0, "re-encrypted 1 secret with the first key\n")
    # Only the new key now.
    assert call_with(key_env(new)) == digest(VALUE)
    # Rotating without every old key fails, naming the secret, and changes nothing.
    failed = rotate(db_url, key_env(old))
    assert failed.returncode == 1
    assert "secret 'API_KEY' cannot be decrypted" in failed.stderr
    assert call_with(key_env(new)) == digest(VALUE)


def test_without_a_key_the_server_serves_and_setting_says_which_setting_is_missing(
    server: str,
) -> None:
    with Client(server, retries=False) as client:
        with pytest.raises(FailedPrecondition, match="it has no TOOLVAULT_SECRETS_KEY"):
            client.set_secret("API_KEY", VALUE)
        assert client.list_secrets() == []
        client.publish("f", DIGEST, secrets=["API_KEY"])
        with pytest.raises(FailedPrecondition, match="not set in namespace 'default': API_KEY"):
            client.invoke("f")


def test_a_bad_key_stops_the_server_at_start_naming_which_key(tmp_path: Path) -> None:
    done = subprocess.run(
        [TOOLVAULT, "serve", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={"TOOLVAULT_SECRETS_KEY": f"{Fernet.generate_key().decode()},not-a-key"},
        timeout=60,
    )
    assert done.returncode == 2
    assert "TOOLVAULT_SECRETS_KEY" in done.stderr and "key 2 is not a Fernet key" in done.stderr
    assert "not-a-key" not in done.stderr


def test_roles_admins_and_publishers_set_in_their_namespaces_readers_only_list(
    auth_server: ServerProcess, admin: Client
) -> None:
    publisher_key, publisher_listed = admin.create_key("publisher", namespaces=["team"])
    invoker_key, _ = admin.create_key("invoker", namespaces=["team"])
    admin.set_secret("other/API_KEY", "other-value")
    with (
        Client(auth_server.address, api_key=publisher_key, retries=False) as publisher,
        Client(auth_server.address, api_key=invoker_key, retries=False) as invoker,
    ):
        secret, _ = publisher.set_secret("team/API_KEY", VALUE)
        assert secret.updated_by == publisher_listed.prefix
        with pytest.raises(PermissionDenied, match="namespace 'other' is outside"):
            publisher.set_secret("other/API_KEY", "mine-now")
        with pytest.raises(NotFound, match="secret 'other/API_KEY' not found"):
            publisher.delete_secret("other/API_KEY")
        with pytest.raises(PermissionDenied, match="role invoker may not call SetSecret"):
            invoker.set_secret("team/API_KEY", "mine-now")
        with pytest.raises(PermissionDenied, match="role invoker may not call DeleteSecret"):
            invoker.delete_secret("team/API_KEY")
        assert [s.name for s in invoker.list_secrets()] == ["team/API_KEY"]
        assert [s.name for s in publisher.list_secrets(namespace="other")] == []
        events = publisher.audit_events(action="secret.set")
        assert [(e.target, e.actor) for e in events] == [("team/API_KEY", publisher_listed.prefix)]
    # The refused attempts changed nothing.
    publisher_secret = next(s for s in admin.list_secrets() if s.name == "team/API_KEY")
    assert publisher_secret.updated_at == secret.updated_at
    assert [s.name for s in admin.list_secrets()] == ["other/API_KEY", "team/API_KEY"]
    assert_no_value(repr(admin.audit_events()))


def test_concurrent_sets_of_a_new_name_make_one_secret_and_all_succeed(database: Database) -> None:
    store = Secrets(database, [Fernet.generate_key().decode()])
    barrier = threading.Barrier(6)

    def set_value(number: int) -> bool:
        barrier.wait()
        return store.set("team/RACE_KEY", f"value-{number}", actor=ACTOR)[1]

    with ThreadPoolExecutor(6) as pool:
        created = list(pool.map(set_value, range(6)))
    assert created.count(True) == 1
    (listed,), _ = store.secrets(size=0, token="")
    assert listed.name == "team/RACE_KEY"
    assert store.values("team", ["RACE_KEY"])["RACE_KEY"].startswith("value-")
