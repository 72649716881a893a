"""The weight resolver: config > environment > verified cache > download, served here from a
local HTTP server through the base-URL override; offline and failure errors."""
import functools
import http.server
import json
import threading
import time

import pytest
import torch

from lavis_ext.models import weights
from lavis_ext.models.weights import PARTS, WeightsUnavailableError, resolve


@pytest.fixture()
def server(tmp_path):
    """Fake weight files with the real names and tiny shapes, on 127.0.0.1; counts GETs."""
    root = tmp_path / "served" / "weights"
    root.mkdir(parents=True)
    torch.save({"cls_token": torch.zeros(1, 1, 4), "blocks.0.norm1.weight": torch.ones(4)},
               root / "eva_vit_g.pth")
    torch.save({"model": {"query_tokens": torch.zeros(1, 2, 4)}}, root / "blip2_pretrained.pth")
    gets = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            gets.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root.parent)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/weights", root, gets
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def online(tmp_path, monkeypatch):
    """Empty caches, downloads allowed (the test session is offline by default)."""
    for name in weights.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    for part in PARTS.values():
        monkeypatch.delenv(part.env, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _serve(monkeypatch, server):
    base, root, gets = server
    monkeypatch.setenv(weights.BASE_URL_ENV, base)
    return root, gets


def test_download_then_cache_reuse(online, server, monkeypatch):
    root, gets = _serve(monkeypatch, server)
    path = resolve("eva_vit_g")
    assert path == str(online / "eva_vit_g.pth")
    assert torch.load(path, weights_only=True)["blocks.0.norm1.weight"].shape == (4,)
    record = json.loads((online / ("eva_vit_g.pth" + weights.SIDECAR_SUFFIX)).read_text())
    assert record["size"] == (root / "eva_vit_g.pth").stat().st_size
    assert record["url"].endswith("/weights/eva_vit_g.pth")
    assert resolve("eva_vit_g") == path
    assert len(gets) == 1, "the second resolve reads the cache"


@pytest.mark.parametrize("damage", ["short", "corrupt"])
def test_damaged_cache_is_refused_and_fetched_again(online, server, monkeypatch, damage, caplog):
    root, gets = _serve(monkeypatch, server)
    path = online / "blip2_pretrained.pth"
    resolve("blip2_pretrained")
    data = path.read_bytes()
    time.sleep(0.01)  # a rewrite must change the mtime the sidecar recorded
    if damage == "short":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(bytes(b ^ 0x5A for b in data))
    with caplog.at_level("WARNING"):
        assert resolve("blip2_pretrained") == str(path)
    assert "Refusing the cached file" in caplog.text
    assert path.read_bytes() == data
    assert len(gets) == 2


def test_file_lavis_cached_without_sidecar_is_used_when_complete(online, monkeypatch):
    online.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, online / "eva_vit_g.pth")
    monkeypatch.setenv(weights.BASE_URL_ENV, "http://127.0.0.1:9/unreachable")
    assert resolve("eva_vit_g") == str(online / "eva_vit_g.pth")
    (online / "eva_vit_g.pth").write_bytes((online / "eva_vit_g.pth").read_bytes()[:40])
    (online / ("eva_vit_g.pth" + weights.SIDECAR_SUFFIX)).unlink()
    with pytest.raises(WeightsUnavailableError, match="downloading failed"):
        resolve("eva_vit_g")
    assert not (online / "eva_vit_g.pth").exists(), "the truncated file was removed"


def test_offline_error_names_part_key_variable_url_and_size(online, monkeypatch):
    monkeypatch.setenv("LAVIS_EXT_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        resolve("eva_vit_g")
    message = str(info.value)
    for expected in ("eva_vit_g", "model.vit_weights", "LAVIS_EXT_EVA_VIT_G", PARTS["eva_vit_g"].url,
                     "about 2 GB", "offline"):
        assert expected in message, expected


def test_failed_download_is_one_clear_error(online, server, monkeypatch):
    monkeypatch.setenv(weights.BASE_URL_ENV, server[0] + "/missing")
    with pytest.raises(WeightsUnavailableError, match=r"blip2_pretrained.*downloading failed.*"
                                                      r"LAVIS_EXT_BLIP2_PRETRAINED"):
        resolve("blip2_pretrained")


def test_order_config_then_environment_then_cache(online, tmp_path, monkeypatch):
    configured, from_env = tmp_path / "a.pth", tmp_path / "b.pth"
    for path in (configured, from_env):
        torch.save({}, path)
    monkeypatch.setenv("LAVIS_EXT_EVA_VIT_G", str(from_env))
    assert resolve("eva_vit_g", str(configured)) == str(configured)
    assert resolve("eva_vit_g") == str(from_env)
    assert resolve("eva_vit_g", PARTS["eva_vit_g"].url) == str(from_env), "URL = the part"
    assert resolve("eva_vit_g", "random") == "random"
    with pytest.raises(WeightsUnavailableError, match="model.vit_weights names .*nope.pth"):
        resolve("eva_vit_g", str(tmp_path / "nope.pth"))
    monkeypatch.setenv("LAVIS_EXT_EVA_VIT_G", str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsUnavailableError, match=r"\$LAVIS_EXT_EVA_VIT_G names .*gone.pth"):
        resolve("eva_vit_g")


def test_unpublished_parts_say_how_to_get_them(online):
    with pytest.raises(WeightsUnavailableError, match="never released.*LAVIS_EXT_VIT_B_MAE"):
        resolve("vit_b_mae")
    with pytest.raises(WeightsUnavailableError, match="LAVIS_EXT_EXP_BLIP_CKPT"):
        resolve("exp_blip")


def test_several_missing_parts_make_one_error(online, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError) as info:
        weights.resolve_all([("eva_vit_g", None), ("blip2_pretrained", None)])
    assert "2 pretrained parts are missing" in str(info.value)
    assert "eva_vit_g.pth" in str(info.value) and "blip2_pretrained.pth" in str(info.value)


def test_expblip_weights_lists_and_fetches(online, server, monkeypatch, capsys):
    from lavis_ext.cli import main

    _serve(monkeypatch, server)
    assert main(["weights", "eva_vit_g"]) == 1, "not cached, and no --fetch"
    assert "eva_vit_g: missing" in capsys.readouterr().out
    assert main(["weights", "--fetch", "eva_vit_g", "blip2_pretrained"]) == 0
    out = capsys.readouterr().out
    assert f"eva_vit_g: {online / 'eva_vit_g.pth'}" in out
    assert main(["weights", "eva_vit_g"]) == 0, "cached now"
    assert main(["weights", "nonsense"]) == 2
