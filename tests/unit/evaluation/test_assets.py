"""varscale assets: downloads over a real HTTP server on localhost, hash checks, the manifest, listing."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from functools import partial

import pytest

from harness.cli.main import main
from harness.evaluation import assets


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_verifies_the_hash_and_records_it(server, tmp_path):
    served, url = server
    payload = b"weights" * 1000
    (served / "w.pth").write_bytes(payload)
    sha = hashlib.sha256(payload).hexdigest()
    good = assets.Asset("thing", "test file", "w.pth", "things", f"{url}/w.pth", sha256=sha)
    root = tmp_path / "cache"
    path = assets.fetch(good, root)
    assert path == root / "things" / "w.pth" and path.read_bytes() == payload
    assert assets.read_manifest(root)["thing"]["sha256"] == sha
    (served / "w.pth").write_bytes(b"changed")
    assert assets.fetch(good, root) == path                     # present: not downloaded again
    with pytest.raises(assets.AssetError, match="expected " + sha):
        assets.fetch(good, root, force=True)                   # the new bytes do not match
    assert path.read_bytes() == payload                         # the good copy is untouched
    assert not list((root / "things").glob("*.part"))


def test_prefix_hash_from_the_file_name_is_checked(server, tmp_path):
    served, url = server
    (served / "x-6726825d.pth").write_bytes(b"corrupt")
    asset = assets.Asset("x", "test", "x-6726825d.pth", "x", f"{url}/x-6726825d.pth", sha256_prefix="6726825d")
    with pytest.raises(assets.AssetError, match="does not start with 6726825d"):
        assets.fetch(asset, tmp_path / "cache")
    assert not (tmp_path / "cache" / "x" / "x-6726825d.pth").exists()


def test_list_shows_present_assets_and_verify_catches_changed_files(tmp_path, capsys):
    root = tmp_path / "cache"
    target = root / "cleanfid" / "inception-2015-12-05.pt"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"torchscript")
    assets._record(root, assets.ASSETS["inception-cleanfid"], target, hashlib.sha256(b"torchscript").hexdigest())
    assert main(["assets", "list", "--cache-dir", str(root), "--verify", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["assets"]}
    assert rows["inception-cleanfid"]["present"] and rows["inception-cleanfid"]["verified"]
    assert not rows["inception"]["present"] and not rows["var-d16"]["present"]
    target.write_bytes(b"tampered")
    assert main(["assets", "list", "--cache-dir", str(root), "--verify"]) == 1
    assert "SHA256 MISMATCH" in capsys.readouterr().out


def test_unknown_asset_name_is_a_usage_error(capsys):
    assert main(["assets", "fetch", "--what", "inception,nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err


def test_registry_points_where_the_loaders_look():
    from harness.evaluation import cleanfid_check as cleanfid_backend
    from harness.evaluation import inception

    assert assets.ASSETS["inception"].filename == inception.WEIGHTS_FILENAME
    assert inception.WEIGHTS_FILENAME.split("-")[-1].startswith(assets.ASSETS["inception"].sha256_prefix)
    assert assets.ASSETS["inception"].subdir == "inception"    # find_weights: <cache>/inception/<file>
    assert assets.ASSETS["inception-cleanfid"].subdir == "cleanfid"
    assert assets.ASSETS["inception-cleanfid"].filename == cleanfid_backend.WEIGHTS_FILENAME


def test_damaged_manifest_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "assets.json").write_text("{truncated")
    assert main(["assets", "list", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'assets.json'} is not readable JSON" in err
