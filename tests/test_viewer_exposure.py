"""The viewer stays on this machine unless told otherwise, and says so loudly when it is not."""

import inspect
import socket

import pytest

from gags_viewer.viewer import commands
from gags_viewer.viewer.exposure import exposure_warnings, is_loopback
from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "::1", "[::1]", "LOCALHOST"])
def test_loopback_hosts_are_quiet(host):
    assert is_loopback(host)
    assert exposure_warnings(host, 8080, share=False) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "my-workstation"])
def test_other_hosts_warn_with_the_port(host):
    assert not is_loopback(host)
    (line,) = exposure_warnings(host, 8123, share=False)
    assert ":8123" in line and "anyone" in line and "--host 127.0.0.1" in line


def test_share_says_what_it_publishes():
    (line,) = exposure_warnings("127.0.0.1", 8080, share=True)
    assert "--share" in line and "anyone with the URL" in line and "exports" in line


def test_every_command_binds_loopback_by_default():
    for command in (commands.serve, commands.view, commands.demo, commands.train_view):
        assert inspect.signature(command).parameters["host"].default == "127.0.0.1", command.__name__


def test_serving_on_all_interfaces_prints_the_warning(scene, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, _ = commands.serve(scene.field, scene.engine, host="0.0.0.0", port=port, output_dir=tmp_path, block=False)
    try:
        out = capsys.readouterr().out
        assert f"WARNING: listening on 0.0.0.0:{server.get_port()}" in out
    finally:
        server.stop()
    server, _ = commands.serve(scene.field, scene.engine, port=port, output_dir=tmp_path, block=False)
    try:
        assert "WARNING" not in capsys.readouterr().out
    finally:
        server.stop()
