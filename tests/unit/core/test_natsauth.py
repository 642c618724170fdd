"""The NATS permissions table, the credentials `empath up` keeps, and the credential settings."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from empath.core import errors, names, natsauth, settings, up


def allowed(role: str, subject: str, *, publish: bool = True) -> bool:
    """Whether a NATS subject matches one of a role's allow patterns (`*` and `>` wildcards)."""
    rights = natsauth.PERMISSIONS[role]
    for pattern in rights.publish if publish else rights.subscribe:
        want, have = pattern.split("."), subject.split(".")
        for i, token in enumerate(want):
            if token == ">":
                if len(have) > i:
                    return True
                break
            if i >= len(have) or (token != "*" and token != have[i]):
                break
        else:
            if len(want) == len(have):
                return True
    return False


def test_each_event_subject_is_published_by_its_roles_only() -> None:
    publishers = {
        names.RECEIVED_SUBJECT: {"ingress", "spool"},
        names.JOBS_SUBJECT: {"spool"},
        names.ATTEMPTED_SUBJECT: {"delivery"},
        names.QUERY_DELETE_SUBJECT: {"control"},
        names.QUERY_FREEZE_SUBJECT: {"control"},
        names.DNS_INVALIDATE_SUBJECT: {"control"},
        f"$KV.{names.QUEUE_BUCKET}.{names.queue_key('m1')}": {"spool"},
        f"$KV.{names.FLAGS_BUCKET}.{names.FROZEN_FLAG}": {"spool"},
        f"$KV.{names.OVERRIDES_BUCKET}.dest.test": {"control"},
        f"$KV.{names.DNS_BUCKET}.mx.dest.test": {"delivery", "control"},
    }
    for subject, roles in publishers.items():
        found = {role for role in natsauth.ROLES if allowed(role, subject)}
        assert found == roles, subject


def test_only_the_spool_answers_the_queue_api_and_consumes_events() -> None:
    assert {r for r in natsauth.ROLES if allowed(r, names.QUERY_LIST_SUBJECT, publish=False)} == {
        "spool"
    }
    for role in natsauth.ROLES:
        assert not allowed(role, names.RECEIVED_SUBJECT, publish=False)
    spool_next = f"$JS.API.CONSUMER.MSG.NEXT.EMPATH_RECEIVED.{names.SPOOL_RECEIVED_CONSUMER}"
    jobs_next = f"$JS.API.CONSUMER.MSG.NEXT.EMPATH_JOBS.{names.DELIVERY_JOBS_CONSUMER}"
    assert {r for r in natsauth.ROLES if allowed(r, spool_next)} == {"spool"}
    assert {r for r in natsauth.ROLES if allowed(r, jobs_next)} == {"delivery"}
    assert natsauth.PERMISSIONS["spool"].allow_responses
    assert not any(natsauth.PERMISSIONS[r].allow_responses for r in natsauth.ROLES if r != "spool")


def test_each_role_reads_replies_on_its_own_inbox_only() -> None:
    for role in natsauth.ROLES:
        for other in natsauth.ROLES:
            reply = f"{natsauth.inbox_prefix(other)}.abc.1"
            assert allowed(role, reply, publish=False) == (role == other)
        assert not allowed(role, "_INBOX.abc.1", publish=False)


def test_a_role_renews_only_its_own_heartbeat() -> None:
    for role in natsauth.ROLES:
        assert allowed(role, f"$KV.{names.SERVICES_BUCKET}.{role}.host-1")
        other = "spool" if role != "spool" else "ingress"
        assert not allowed(role, f"$KV.{names.SERVICES_BUCKET}.{other}.host-1")


def test_passwords_are_made_once_and_kept_private(tmp_path: Path) -> None:
    directory = tmp_path / "credentials"
    first = natsauth.ensure_passwords(directory)
    assert set(first) == {*natsauth.ROLES, natsauth.ADMIN}
    assert len(set(first.values())) == len(first)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for user in first:
        assert stat.S_IMODE(natsauth.password_file(directory, user).stat().st_mode) == 0o600
    assert natsauth.ensure_passwords(directory) == first


def test_the_server_config_holds_every_user_with_its_permissions(tmp_path: Path) -> None:
    passwords = natsauth.ensure_passwords(tmp_path)
    path = natsauth.write_server_config(tmp_path / "server.conf", passwords)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = {u["user"]: u for u in json.loads(path.read_text())["authorization"]["users"]}
    assert set(users) == set(passwords)
    ingress = users["ingress"]
    assert ingress["password"] == passwords["ingress"]
    assert names.RECEIVED_SUBJECT in ingress["permissions"]["publish"]["allow"]
    assert names.ATTEMPTED_SUBJECT not in ingress["permissions"]["publish"]["allow"]
    assert users["spool"]["permissions"]["allow_responses"] is True


def test_up_runs_each_service_as_its_own_user(tmp_path: Path) -> None:
    base = settings.Settings(nats_password="shared", nats_user="someone")
    own = up.role_settings(base, "delivery", tmp_path)
    assert own.nats_user == "delivery"
    assert own.nats_password is None
    assert own.nats_password_file == natsauth.password_file(tmp_path, "delivery")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"nats_password": "x"}, "EMPATH_NATS_USER"),
        ({"nats_user": "ingress", "nats_password_file": "/no/such/file"}, "NATS_PASSWORD_FILE"),
        ({"nats_tls_ca": "/no/such/ca.pem"}, "EMPATH_NATS_TLS_CA"),
    ],
)
def test_a_wrong_nats_credential_setting_is_refused_by_name(
    values: dict[str, str], named: str
) -> None:
    with pytest.raises(errors.ConfigurationError, match=named):
        settings.load(environment=False, **values)


def test_a_password_and_a_password_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("from-a-secret\n")
    with pytest.raises(errors.ConfigurationError, match="set one, not both"):
        settings.load(
            environment=False, nats_user="spool", nats_password="x", nats_password_file=secret
        )
    loaded = settings.load(environment=False, nats_user="spool", nats_password_file=secret)
    assert loaded.nats_secret() == "from-a-secret"


def test_the_module_makes_the_credentials_for_running_the_services_yourself(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert natsauth.main([str(tmp_path)]) == 0
    config = json.loads((tmp_path / "nats-server.conf").read_text())
    spool = natsauth.password_file(tmp_path, "spool").read_text().strip()
    assert {"user": "spool", "password": spool} == {
        k: v
        for u in config["authorization"]["users"]
        if u["user"] == "spool"
        for k, v in u.items()
        if k in ("user", "password")
    }
    assert f"--config {tmp_path / 'nats-server.conf'}" in capsys.readouterr().out
    assert natsauth.main([]) == 2


def test_streams_are_created_by_the_spool_and_buckets_by_their_owners() -> None:
    creators = {
        f"$JS.API.STREAM.CREATE.{names.RECEIVED_STREAM.name}": {"spool"},
        f"$JS.API.STREAM.UPDATE.{names.JOBS_STREAM.name}": {"spool"},
        f"$JS.API.STREAM.CREATE.KV_{names.QUEUE_BUCKET}": {"spool"},
        f"$JS.API.STREAM.CREATE.KV_{names.FLAGS_BUCKET}": {"spool"},
        f"$JS.API.STREAM.CREATE.KV_{names.DNS_BUCKET}": {"delivery"},
        f"$JS.API.STREAM.CREATE.KV_{names.OVERRIDES_BUCKET}": {"control"},
        f"$JS.API.STREAM.CREATE.KV_{names.SERVICES_BUCKET}": set(natsauth.ROLES),
        # The owner changes its bucket's replicas (EMPATH_NATS_REPLICAS); nobody else.
        f"$JS.API.STREAM.UPDATE.KV_{names.QUEUE_BUCKET}": {"spool"},
        f"$JS.API.STREAM.UPDATE.KV_{names.DNS_BUCKET}": {"delivery"},
        "$JS.API.STREAM.CREATE.SPY": set(),
        f"$JS.API.STREAM.DELETE.{names.RECEIVED_STREAM.name}": set(),
    }
    for subject, roles in creators.items():
        assert {role for role in natsauth.ROLES if allowed(role, subject)} == roles, subject


def test_the_charts_permissions_are_the_tables() -> None:
    """The chart's try-out NATS builds its users from a copy of the table; after a change:
    `python -m empath.core.natsauth --permissions charts/empath/files/nats-permissions.json`."""
    chart = Path(__file__).parents[3] / "charts" / "empath" / "files" / "nats-permissions.json"
    assert chart.read_text() == natsauth.permissions_document()
    table = json.loads(chart.read_text())
    assert table["delivery"] == natsauth.authorization({"delivery": "x"})["users"][0]["permissions"]  # type: ignore[index]
