"""The SSH adapter against the lab's real sshd: commands, host-key refusals, unreachable hosts, the pool."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from lifeline.configs.loading import load_plan
from lifeline.tasks.adapters import ssh
from lifeline.tasks.adapters.ssh import pool as ssh_pool
from lifeline.tasks.run import topology

from tests.servers import free_port

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def hosts(lab) -> dict[str, ssh.SshTarget]:
    return topology.ssh_targets(load_plan(lab.plan).plan.hosts, connect_timeout=3)


@pytest.fixture
def pool() -> Iterator[ssh_pool.SshPool]:
    own = ssh_pool.SshPool()
    yield own
    own.close_all()


def known_hosts_entries(target: ssh.SshTarget) -> dict[str, str]:
    """known_hosts name ([address]:port) -> "key-type key" for every line of the lab's file."""
    entries = {}
    for line in target.known_hosts_file.read_text().splitlines():
        name, key_type, key = line.split()[:3]
        entries[name] = f"{key_type} {key}"
    return entries


def known_hosts_name(target: ssh.SshTarget) -> str:
    return f"[{target.address}]:{target.port}"


def live_connections(pool: ssh_pool.SshPool, target: ssh.SshTarget) -> int:
    return sum(1 for connection in pool._connections.get(target, []) if connection.alive())


def assert_one_line_naming(error: ssh.SshError, target: ssh.SshTarget) -> str:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"host {target.name} {target.address}:{target.port}: ")
    return message


def test_command_round_trip_quotes_every_argument(hosts, pool):
    awkward = ["a b", "it's", "$HOME", "; rm -rf /", "`id`", "录音", ""]
    started = time.monotonic()
    result = pool.run(hosts["main"], ["printf", "%s|", *awkward], timeout=5)
    assert time.monotonic() - started < 2
    assert result.exit_status == 0 and result.succeeded
    assert result.stdout == "|".join(awkward) + "|"
    assert result.stderr == ""


def test_stdout_stderr_and_exit_status_are_kept_apart(hosts, pool):
    result = pool.run(hosts["dr"], ["sh", "-c", "echo out; echo err >&2; exit 7"], timeout=5)
    assert (result.exit_status, result.stdout, result.stderr) == (7, "out\n", "err\n")


def test_commands_read_an_empty_stdin(hosts, pool):
    started = time.monotonic()
    result = pool.run(hosts["main"], ["cat"], timeout=5)
    assert (result.exit_status, result.stdout) == (0, "")
    assert time.monotonic() - started < 1


def test_many_short_commands_at_once_never_break_a_shared_connection(hosts, pool):
    for _ in range(10):  # fast commands close their channels while others open: an ordering race in paramiko
        with ThreadPoolExecutor(40) as executor:
            results = list(executor.map(lambda number: pool.run(hosts["dr"], ["echo", str(number)], timeout=10), range(40)))
        assert [result.stdout for result in results] == [f"{number}\n" for number in range(40)]


def test_large_output_is_read_completely(hosts, pool):
    result = pool.run(hosts["main"], ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2"], timeout=10)
    assert len(result.stdout) == 3_000_000 and result.stderr == "done\n"


def test_check_turns_a_failed_command_into_an_error_with_the_stderr_tail(hosts, pool):
    with pytest.raises(ssh.SshCommandFailed) as raised:
        pool.run(hosts["main"], ["sh", "-c", "echo first >&2; echo 'disk full' >&2; exit 3"], timeout=5, check=True)
    message = assert_one_line_naming(raised.value, hosts["main"])
    assert "sh exited with status 3" in message and "disk full" in message
    assert not raised.value.transient and not raised.value.user_error


def test_a_command_that_overruns_its_timeout_is_abandoned(hosts, pool):
    started = time.monotonic()
    with pytest.raises(ssh.SshCommandTimeout) as raised:
        pool.run(hosts["main"], ["sleep", "5"], timeout=0.3)
    assert time.monotonic() - started < 2
    assert raised.value.transient
    assert "sleep did not finish within 0.3 s" in assert_one_line_naming(raised.value, hosts["main"])
    assert pool.run(hosts["main"], ["true"], timeout=5).succeeded  # the connection is still usable


def test_the_pool_reuses_one_connection_and_multiplexes_concurrent_commands(hosts, pool):
    for _ in range(3):
        pool.run(hosts["main"], ["true"], timeout=5)
    assert live_connections(pool, hosts["main"]) == 1
    with ThreadPoolExecutor(40) as executor:
        results = list(executor.map(lambda number: pool.run(hosts["main"], ["echo", str(number)], timeout=10), range(40)))
    assert [result.stdout for result in results] == [f"{number}\n" for number in range(40)]
    assert live_connections(pool, hosts["main"]) <= -(-40 // ssh_pool.SESSIONS_PER_CONNECTION)


def test_the_pool_replaces_a_connection_that_died(hosts, pool):
    pool.run(hosts["dr"], ["true"], timeout=5)
    for connection in pool._connections[hosts["dr"]]:  # simulate the server dropping it
        connection.client.get_transport().close()
    assert pool.run(hosts["dr"], ["echo", "again"], timeout=5).stdout == "again\n"
    assert live_connections(pool, hosts["dr"]) == 1


def test_connect_verifies_the_host_key_and_authenticates(hosts):
    client = ssh_pool.connect(hosts["main"])
    try:
        _, stdout, _ = client.exec_command("id -un", timeout=5)
        assert stdout.read().decode().strip() == hosts["main"].user
    finally:
        client.close()


def test_the_default_pool_runs_commands_until_closed(hosts):
    assert ssh.run(hosts["dr"], ["echo", "ok"], timeout=5).stdout == "ok\n"
    assert live_connections(ssh.default_pool(), hosts["dr"]) == 1
    ssh.close_all()
    assert live_connections(ssh.default_pool(), hosts["dr"]) == 0


def test_an_endless_stream_still_times_out(hosts, pool):
    started = time.monotonic()
    with pytest.raises(ssh.SshCommandTimeout):
        pool.run(hosts["main"], ["yes"], timeout=0.5)
    assert time.monotonic() - started < 2


def test_an_unknown_host_key_is_refused_with_one_line(hosts, pool, tmp_path):
    main, dr = hosts["main"], hosts["dr"]
    only_dr = tmp_path / "known_hosts"
    only_dr.write_text(f"{known_hosts_name(dr)} {known_hosts_entries(dr)[known_hosts_name(dr)]}\n")
    target = dataclasses.replace(main, known_hosts_file=only_dr)
    for attempt in (lambda: ssh_pool.connect(target), lambda: pool.run(target, ["true"], timeout=5)):
        with pytest.raises(ssh.UnknownHostKey) as raised:
            attempt()
        message = assert_one_line_naming(raised.value, target)
        assert "its key (ssh-ed25519 SHA256:" in message
        assert message.endswith(f"is not in known_hosts {only_dr} — refusing to connect")
        assert raised.value.user_error and not raised.value.transient
    assert live_connections(pool, target) == 0


def test_a_missing_known_hosts_file_refuses(hosts, tmp_path):
    target = dataclasses.replace(hosts["main"], known_hosts_file=tmp_path / "absent")
    with pytest.raises(ssh.UnknownHostKey, match="does not exist — refusing to connect"):
        ssh_pool.connect(target)


def test_a_changed_host_key_is_refused(hosts, tmp_path):
    main, dr = hosts["main"], hosts["dr"]
    swapped = tmp_path / "known_hosts"
    swapped.write_text(f"{known_hosts_name(main)} {known_hosts_entries(dr)[known_hosts_name(dr)]}\n")
    target = dataclasses.replace(main, known_hosts_file=swapped)
    with pytest.raises(ssh.HostKeyMismatch) as raised:
        ssh.run(target, ["true"], timeout=5)
    message = assert_one_line_naming(raised.value, target)
    assert "the key changed" in message and message.endswith("— refusing to connect")
    assert raised.value.user_error and not raised.value.transient


def test_a_key_the_server_does_not_know_is_refused(hosts, tmp_path):
    stranger = tmp_path / "id_ed25519"
    stranger.write_bytes(Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    target = dataclasses.replace(hosts["main"], key_file=stranger)
    with pytest.raises(ssh.AuthenticationFailed) as raised:
        ssh_pool.connect(target)
    assert f"user {target.user} was refused with key {stranger}" in assert_one_line_naming(raised.value, target)
    assert raised.value.user_error and not raised.value.transient


def test_the_labs_encrypted_key_opens_with_its_passphrase_file_and_refuses_in_one_line_without_it(hosts, tmp_path):
    """The lab's key is encrypted (its passphrase a canary the secrets test looks for): connect opens it with the
    plan's key_passphrase_file; without the file, or with a wrong passphrase, one line names the file to fix."""
    target = hosts["main"]
    assert target.key_passphrase_file is not None
    client = ssh_pool.connect(target)
    client.close()
    without = dataclasses.replace(target, key_passphrase_file=None)
    with pytest.raises(ssh.AuthenticationFailed) as raised:
        ssh_pool.connect(without)
    assert f"key file {target.key_file} is encrypted: name the file holding its passphrase in key_passphrase_file" \
        in assert_one_line_naming(raised.value, target)
    wrong = tmp_path / "wrong.passphrase"
    wrong.write_text("not-the-passphrase\n")
    with pytest.raises(ssh.AuthenticationFailed) as raised:
        ssh_pool.connect(dataclasses.replace(target, key_passphrase_file=wrong))
    message = assert_one_line_naming(raised.value, target)
    assert f"does not open with the passphrase in {wrong}" in message and "not-the-passphrase" not in message
    assert raised.value.user_error and not raised.value.transient


def test_a_closed_port_is_unreachable_and_transient(hosts, pool):
    target = dataclasses.replace(hosts["main"], port=free_port())
    started = time.monotonic()
    with pytest.raises(ssh.HostUnreachable) as raised:
        pool.run(target, ["true"], timeout=5)
    assert time.monotonic() - started < 1
    assert raised.value.transient and not raised.value.user_error
    assert assert_one_line_naming(raised.value, target).endswith("connection refused")


def test_concurrent_callers_each_get_the_failure_of_the_shared_connection_attempt(hosts, pool):
    target = dataclasses.replace(hosts["main"], port=free_port())

    def attempt(_: int) -> BaseException:
        with pytest.raises(ssh.HostUnreachable) as raised:
            pool.run(target, ["true"], timeout=5)
        return raised.value

    with ThreadPoolExecutor(12) as executor:
        errors = list(executor.map(attempt, range(12)))
    assert len({id(error) for error in errors}) == 12


def test_a_server_that_never_speaks_ssh_times_out_as_unreachable(hosts):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted: list[socket.socket] = []
        acceptor = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
        acceptor.start()
        target = dataclasses.replace(hosts["main"], port=listener.getsockname()[1], connect_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ssh.HostUnreachable) as raised:
            ssh_pool.connect(target)
        assert time.monotonic() - started < 3
        assert raised.value.transient
        for sock in accepted:
            sock.close()


def test_argument_lists_are_quoted_for_the_remote_shell():
    assert ssh.command_line(["echo", "a b", "$X"]) == "echo 'a b' '$X'"
    assert ssh.command_line("echo $X") == "echo $X"
    with pytest.raises(ValueError):
        ssh.command_line([])


def test_plan_hosts_become_targets(lab):
    plan = load_plan(lab.plan).plan
    targets = topology.ssh_targets(plan.hosts)
    assert set(targets) == set(plan.hosts)
    main = targets["main"]
    assert (main.address, main.port, main.user) == (plan.hosts["main"].address, plan.hosts["main"].port,
                                                    plan.hosts["main"].user)
    assert isinstance(main.key_file, Path) and main.known_hosts_file.exists()
