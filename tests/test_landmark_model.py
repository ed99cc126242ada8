"""Finding, downloading and verifying face_landmarker.task. The download is served from a local
HTTP server on the loopback interface (these machines have no internet)."""
from __future__ import annotations

import http.server
import threading

import pytest

from deocc_live import landmark_model
from deocc_live.landmark_model import LandmarkModelError, resolve
from media import LANDMARKER


@pytest.fixture
def server():
    payload = {"body": LANDMARKER.read_bytes()}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = payload["body"]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/face_landmarker.task", payload
    httpd.shutdown()


def test_explicit_path_and_model_dir(monkeypatch):
    assert resolve(LANDMARKER) == LANDMARKER
    assert resolve(LANDMARKER.parent) == LANDMARKER
    monkeypatch.setenv("DEOCC_MODEL_DIR", str(LANDMARKER.parent))
    assert resolve() == LANDMARKER


def test_first_run_download_is_verified_and_cached(server, tmp_path, monkeypatch, capsys):
    url, _payload = server
    monkeypatch.delenv("DEOCC_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(landmark_model, "MODEL_URL", url)
    monkeypatch.setattr(landmark_model.download, "__defaults__", (url, True, 30.0))
    path = resolve()
    assert path == tmp_path / "deocc-live" / "face_landmarker.task"
    assert landmark_model.sha256_of(path) == landmark_model.MODEL_SHA256
    assert "100%" in capsys.readouterr().err
    assert resolve() == path  # cached: no second download


def test_corrupt_download_is_refused_and_not_kept(server, tmp_path, monkeypatch):
    url, payload = server
    payload["body"] = b"<html>captive portal</html>"
    monkeypatch.delenv("DEOCC_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(landmark_model.download, "__defaults__", (url, True, 30.0))
    with pytest.raises(LandmarkModelError, match="sha256"):
        resolve()
    assert not list((tmp_path / "deocc-live").iterdir())


def test_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("DEOCC_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(landmark_model.download, "__defaults__", ("http://127.0.0.1:9/none.task", False, 2.0))
    with pytest.raises(LandmarkModelError) as error:
        resolve()
    message = str(error.value)
    assert "offline" in message and str(tmp_path / "deocc-live" / "face_landmarker.task") in message


def test_wrong_file_is_refused(tmp_path, monkeypatch):
    """A wrong file the user names is refused without telling them to delete it (it may be
    their own); a damaged cached copy, which the next run downloads again, is to be deleted."""
    wrong = tmp_path / "face_landmarker.task"
    wrong.write_bytes(b"x" * 1000)
    with pytest.raises(LandmarkModelError, match="sha256") as error:
        resolve(wrong)
    assert "delete" not in str(error.value) and "point to MediaPipe's" in str(error.value)
    monkeypatch.delenv("DEOCC_MODEL_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "deocc-live" / "face_landmarker.task"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x" * 1000)
    with pytest.raises(LandmarkModelError, match="delete it and run again"):
        resolve()
