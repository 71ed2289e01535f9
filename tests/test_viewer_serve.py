"""What ``view`` / ``demo`` print when they start: the field, the URL (loudly when the port moved), where
exports go."""

from __future__ import annotations

import socket

from tests.test_viewer_fixtures import scene  # noqa: F401 - fixture


def test_a_taken_port_is_said_loudly_with_the_url(scene, tmp_path, capsys):
    from gags_viewer.viewer.commands import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server, _ = serve(
            scene.field, scene.engine, port=port, output_dir=tmp_path / "out", block=False, label="my field"
        )
        try:
            actual = server.get_port()
        finally:
            server.stop()
    out, err = capsys.readouterr()
    assert actual != port
    assert f"port {port} is taken; serving on port {actual} instead: http://127.0.0.1:{actual}" in err
    assert f"serving my field ({scene.field.num_gaussians:,} Gaussians) at http://127.0.0.1:{actual}" in out
    assert f"exports are written to {(tmp_path / 'out').resolve()}" in out
