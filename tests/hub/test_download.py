"""robaug.hub: registry, lazy download, cache, offline mode, local formats, the safetensors-only rule.

Every download test runs the real download code against a real HTTP server on 127.0.0.1 that serves
safetensors files of a tiny real diffusers UNet2DModel built here. "Equal outputs" compare the loaded
denoiser with ``DiffusersDenoiser`` wrapped around the original in-memory model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from _paths import SOURCE_ROOT, WEIGHTS_DIR, subprocess_env
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import save as save_safetensors_bytes
from safetensors.torch import save_file

import robaug.hub as hub
from robaug.diffusion import DiffusersDenoiser
from robaug.hub import _download, _fetch
from robaug.hub.registry import WeightFile, WeightsEntry

SCHED = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear",
         "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "epsilon"}


def tiny_unet_config(num_class_embeds: int | None = None) -> dict:
    return dict(sample_size=16, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=[8, 16],
                down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"],
                norm_num_groups=4, num_class_embeds=num_class_embeds)


def make_unet(seed: int = 0, num_class_embeds: int | None = None) -> UNet2DModel:
    torch.manual_seed(seed)
    unet = UNet2DModel(**tiny_unet_config(num_class_embeds)).eval()
    with torch.no_grad():  # make every weight non-trivial (zero-init layers would hide loading bugs)
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet


def st_bytes(unet: UNet2DModel) -> bytes:
    return save_safetensors_bytes({k: v.contiguous() for k, v in unet.state_dict().items()})


def outputs(denoiser, labels=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 16, 16, generator=g)
    sigma = torch.tensor([0.05, 1.0, 20.0])
    with torch.no_grad():
        return denoiser(x, sigma, labels)


def reference(unet, null_label=None):
    return DiffusersDenoiser(unet, dict(SCHED), null_label=null_label)


def assert_same_model(loaded, unet, labels=None, null_label=None):
    ref_sd = unet.state_dict()
    got_sd = loaded.unet.state_dict()
    assert ref_sd.keys() == got_sd.keys()
    for k in ref_sd:
        assert torch.equal(ref_sd[k], got_sd[k]), k
    assert torch.equal(outputs(loaded, labels), outputs(reference(unet, null_label), labels))


def cache_files(root: Path) -> list[Path]:
    """Every file under the cache except the inter-process lock files."""
    return sorted(p for p in root.rglob("*") if p.is_file() and ".locks" not in p.parts)


# ------------------------------------------------------------------------------------------------------
# A tiny Hugging Face-like file server
# ------------------------------------------------------------------------------------------------------


class FileServer:
    """Serves ``files[path] = bytes`` over HTTP on 127.0.0.1 and records every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()      # send Content-Length, then half the body, then hang up
        self.slow: set[str] = set()          # send the body in small delayed pieces
        self.redirect: dict[str, str] = {}   # path -> absolute Location
        self.content_type: dict[str, str] = {}  # path -> Content-Type header
        self.log: list[tuple[str, dict]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):  # noqa: N802 - http.server API
                owner.log.append((self.path, dict(self.headers)))
                if self.path in owner.redirect:
                    self.send_response(302)
                    self.send_header("Location", owner.redirect[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = owner.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                if self.path in owner.content_type:
                    self.send_header("Content-Type", owner.content_type[self.path])
                self.end_headers()
                if self.path in owner.truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if self.path in owner.slow:
                    step = max(1, len(data) // 10)
                    for i in range(0, len(data), step):
                        self.wfile.write(data[i:i + step])
                        self.wfile.flush()
                        time.sleep(0.1)
                    return
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def requests(self, suffix: str = "") -> list[str]:
        return [p for p, _ in self.log if p.endswith(suffix)]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.stop()


@pytest.fixture
def env(tmp_path, monkeypatch, server):
    """Isolated cache, downloads allowed, Hub endpoint = the local server."""
    for var in ("ROBAUG_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("ROBAUG_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no user token file
    return cache


@pytest.fixture
def registered():
    """Register entries for one test and remove them afterwards."""
    names = []

    def add(entry: WeightsEntry) -> WeightsEntry:
        hub.register_weights(entry, overwrite=True)
        names.append(entry.name)
        return entry

    yield add
    from robaug.hub import registry

    for n in names:
        registry._REGISTRY._items.pop(n, None)  # Registry has no unregister


def hub_entry(name: str, sha256: str | None, revision: str = "0123456789abcdef0123456789abcdef01234567",
              null_label: int | None = None, num_class_embeds: int | None = None) -> WeightsEntry:
    return WeightsEntry(
        name=name, source="hub", repo_id=name, revision=revision,
        files=(WeightFile("diffusion_pytorch_model.safetensors", sha256=sha256),),
        unet_config=tiny_unet_config(num_class_embeds), scheduler_config=SCHED, null_label=null_label,
        resolution=16, in_channels=1, dataset="noise", license="MIT",
    )


def serve_entry(server: FileServer, entry: WeightsEntry, data: bytes) -> str:
    path = f"/{entry.repo_id}/resolve/{entry.revision}/diffusion_pytorch_model.safetensors"
    server.files[path] = data
    return path


# ------------------------------------------------------------------------------------------------------
# Download, cache, offline
# ------------------------------------------------------------------------------------------------------


def test_first_load_downloads_second_load_needs_no_server(env, server, registered, monkeypatch):
    unet = make_unet(0, num_class_embeds=4)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/tiny-cond", hashlib.sha256(data).hexdigest(), null_label=3, num_class_embeds=4))
    path = serve_entry(server, entry, data)

    labels = torch.tensor([0, 2, 3])
    d1 = hub.load_denoiser("test/tiny-cond", progress=False)
    assert server.requests() == [path]
    cached = _fetch.hub_cache_path(env, entry.repo_id, entry.revision, "diffusion_pytorch_model.safetensors")
    assert cached.read_bytes() == data
    assert cache_files(env) == [cached]
    assert d1.null_label == 3 and d1.num_classes == 3
    assert_same_model(d1, unet, labels, null_label=3)

    server.stop()  # the server is gone, and any attempt to open a connection fails the test
    monkeypatch.setattr(_download, "_open", lambda *a, **k: pytest.fail("network used on a cache hit"))
    d2 = hub.load_denoiser("test/tiny-cond", progress=False)
    assert_same_model(d2, unet, labels, null_label=3)
    assert len(server.log) == 1


def test_wrong_hash_is_rejected_and_cache_stays_clean(env, server, registered):
    unet = make_unet(1)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/tiny-badhash", "0" * 64))
    serve_entry(server, entry, data)
    with pytest.raises(hub.ChecksumError, match="sha256 mismatch"):
        hub.load_denoiser("test/tiny-badhash", progress=False)
    assert cache_files(env) == []
    # the same bytes under the right hash load fine afterwards
    registered(dataclasses.replace(entry, files=(WeightFile("diffusion_pytorch_model.safetensors",
                                                            hashlib.sha256(data).hexdigest()),)))
    assert_same_model(hub.load_denoiser("test/tiny-badhash", progress=False), unet)


def test_transfer_cut_short_leaves_nothing_half_written(env, server, registered):
    unet = make_unet(2)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/tiny-cut", None))  # no hash: only the length check can catch it
    path = serve_entry(server, entry, data)
    server.truncate.add(path)
    with pytest.raises(hub.IncompleteDownloadError):
        hub.load_denoiser("test/tiny-cut", progress=False)
    assert cache_files(env) == []
    server.truncate.clear()
    assert_same_model(hub.load_denoiser("test/tiny-cut", progress=False), unet)


_CHILD = """
import hashlib, os, sys, time
from robaug.hub import download_weights
barrier = sys.argv[1]  # both processes start fetching together (interpreter start-up takes unequal time)
open(os.path.join(barrier, str(os.getpid())), "w").close()
deadline = time.time() + 120
while len(os.listdir(barrier)) < 2 and time.time() < deadline:
    time.sleep(0.01)
paths = download_weights("proc/tiny", progress=False)
path = paths["diffusion_pytorch_model.safetensors"]
print(path, hashlib.sha256(open(path, "rb").read()).hexdigest())
"""


def test_two_processes_loading_at_once_end_with_one_good_file(env, server, tmp_path, monkeypatch):
    """Two processes fetch the same repo at the same moment (the fetch code load_denoiser runs, in child
    processes that do not import torch so they start fast); one downloads, the other waits for it."""
    unet = make_unet(3)
    data = st_bytes(unet)
    root = "/proc/tiny/resolve/main/"
    server.files[root + "config.json"] = json.dumps({"_class_name": "UNet2DModel", **tiny_unet_config()}).encode()
    server.files[root + "scheduler_config.json"] = json.dumps(SCHED).encode()
    server.files[root + "diffusion_pytorch_model.safetensors"] = data
    server.slow.add(root + "diffusion_pytorch_model.safetensors")

    child_env = subprocess_env()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(barrier)], env=child_env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    cached = _fetch.hub_cache_path(env, "proc/tiny", "main", "diffusion_pytorch_model.safetensors")
    assert {out.strip().splitlines()[-1] for out, _ in results} == {f"{cached} {hashlib.sha256(data).hexdigest()}"}
    assert len(server.requests("diffusion_pytorch_model.safetensors")) == 1  # the second process waited
    assert len(server.requests(root + "config.json")) == 1
    assert cached.read_bytes() == data
    assert not [p for p in cache_files(env) if p.name.endswith(".part")]
    # and the file they left loads as the original model, offline
    monkeypatch.setenv("ROBAUG_OFFLINE", "1")
    assert_same_model(hub.load_denoiser("proc/tiny"), unet)


@pytest.mark.parametrize("how", ["local_files_only", "ROBAUG_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_with_empty_cache_says_how_to_predownload(env, server, registered, monkeypatch, how):
    entry = registered(hub_entry("test/tiny-offline", None))
    serve_entry(server, entry, st_bytes(make_unet(4)))
    kwargs = {}
    if how == "local_files_only":
        kwargs["local_files_only"] = True
    else:
        monkeypatch.setenv(how, "1")
    with pytest.raises(hub.OfflineCacheMissError) as info:
        hub.load_denoiser("test/tiny-offline", **kwargs)
    msg = str(info.value)
    expected_path = _fetch.hub_cache_path(env, entry.repo_id, entry.revision, "diffusion_pytorch_model.safetensors")
    assert how in msg
    assert "robaug download test/tiny-offline --cache-dir" in msg
    assert "python -m robaug.hub download test/tiny-offline" in msg
    assert "ROBAUG_CACHE" in msg
    assert str(expected_path) in msg
    assert f"{server.url}/test/tiny-offline/resolve/{entry.revision}/diffusion_pytorch_model.safetensors" in msg
    assert server.log == [] and cache_files(env) == []


def test_download_weights_then_offline_load(env, server, registered, monkeypatch):
    unet = make_unet(5)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/tiny-pre", hashlib.sha256(data).hexdigest()))
    serve_entry(server, entry, data)
    paths = hub.download_weights("test/tiny-pre", progress=False)
    assert [p.read_bytes() for p in paths.values()] == [data]
    assert hub.download_weights("test/tiny-pre", progress=False) == paths  # cached: no second request
    assert len(server.log) == 1
    monkeypatch.setenv("ROBAUG_OFFLINE", "1")
    assert_same_model(hub.load_denoiser("test/tiny-pre"), unet)


def test_cli_download_and_list(env, server, registered, tmp_path, capsys):
    unet = make_unet(6)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/tiny-cli", hashlib.sha256(data).hexdigest()))
    serve_entry(server, entry, data)
    other = tmp_path / "elsewhere"
    assert hub.main_download(["test/tiny-cli", "--cache-dir", str(other), "--quiet"]) == 0
    out = capsys.readouterr().out
    target = _fetch.hub_cache_path(other, entry.repo_id, entry.revision, "diffusion_pytorch_model.safetensors")
    assert str(target) in out and target.read_bytes() == data
    assert hub.main_download(["no-such-model", "--quiet"]) == 2  # a usage error, like every command's
    assert hub.main_download(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "google/ddpm-cifar10-32" in listing and "fmnist-ddpm" in listing


def test_generic_hub_pipeline_repo_and_token_not_leaked_on_redirect(env, server, monkeypatch):
    """A repo not in the registry, laid out as a diffusers pipeline (unet/ + scheduler/); the weights are
    redirected to another host (like the Hub's CDN), which must not receive the token."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    unet = make_unet(7)
    data = st_bytes(unet)
    root = "/someone/pipe/resolve/main/"
    server.files[root + "unet/config.json"] = json.dumps({"_class_name": "UNet2DModel", **tiny_unet_config()}).encode()
    server.files[root + "scheduler/scheduler_config.json"] = json.dumps(SCHED).encode()
    server.redirect[root + "unet/diffusion_pytorch_model.safetensors"] = f"http://localhost:{server.port}/cdn/blob"
    server.files["/cdn/blob"] = data
    d = hub.load_denoiser("someone/pipe", progress=False)
    assert_same_model(d, unet)
    headers = {p: {k.lower(): v for k, v in h.items()} for p, h in server.log}
    assert headers[root + "unet/diffusion_pytorch_model.safetensors"]["authorization"] == "Bearer hf_secret"
    assert "authorization" not in headers["/cdn/blob"]
    n = len(server.log)
    hub.load_denoiser("someone/pipe", progress=False)  # fully cached: no request at all
    assert len(server.log) == n


def test_hub_repo_without_safetensors_is_refused_without_fetching_the_pickle(env, server):
    root = "/old/bin-only/resolve/main/"
    server.files[root + "config.json"] = json.dumps({"_class_name": "UNet2DModel", **tiny_unet_config()}).encode()
    server.files[root + "diffusion_pytorch_model.bin"] = b"not fetched"
    with pytest.raises(hub.RemoteFileNotFoundError, match="loads only safetensors"):
        hub.load_denoiser("old/bin-only", progress=False)
    assert not server.requests(".bin")


def test_revision_override_is_url_quoted_and_drops_the_pinned_hash(env, server, registered):
    unet = make_unet(8)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/tiny-rev", "f" * 64))  # hash of the pinned revision, not of refs/pr/3
    server.files["/test/tiny-rev/resolve/refs%2Fpr%2F3/diffusion_pytorch_model.safetensors"] = data
    assert entry.with_revision("refs/pr/3").weights_file.sha256 is None
    assert_same_model(hub.load_denoiser("test/tiny-rev", revision="refs/pr/3", progress=False), unet)


def test_url_source_entry(env, server, registered):
    unet = make_unet(9, num_class_embeds=3)
    data = st_bytes(unet)
    cfg = json.dumps({"unet": tiny_unet_config(3), "scheduler": SCHED, "null_label": 2}).encode()
    server.files["/w/m.safetensors"] = data
    server.files["/w/m.json"] = cfg
    registered(WeightsEntry(
        name="test-url", source="url",
        files=(WeightFile("m.safetensors", hashlib.sha256(data).hexdigest(), url=server.url + "/w/m.safetensors"),
               WeightFile("m.json", hashlib.sha256(cfg).hexdigest(), url=server.url + "/w/m.json")),
    ))
    d = hub.load_denoiser("test-url", progress=False)
    assert d.null_label == 2
    assert_same_model(d, unet, torch.tensor([0, 1, 2]), null_label=2)
    assert all(p.parent.parent == env / "url" for p in cache_files(env))


def test_download_file_streams_to_temp_and_verifies(tmp_path, server):
    data = os.urandom(3 << 20)  # larger than one read chunk
    server.files["/big"] = data
    dest = tmp_path / "sub" / "big.bin"
    out = _download.download_file(server.url + "/big", dest, sha256=hashlib.sha256(data).hexdigest(), progress=False)
    assert out == dest and dest.read_bytes() == data
    with pytest.raises(hub.RemoteFileNotFoundError):
        _download.download_file(server.url + "/missing", tmp_path / "missing", progress=False)
    assert not (tmp_path / "missing").exists()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == [".locks", "big.bin"]


# ------------------------------------------------------------------------------------------------------
# Hardening: content checks without a sha256, the Hugging Face cache, leftovers, umask (issue 12, section 5)
# ------------------------------------------------------------------------------------------------------

_PORTAL = b"<!DOCTYPE html><html><head><title>Log in to the Wi-Fi</title></head><body>...</body></html>"


@pytest.mark.parametrize("how", ["sniffed", "content-type"])
def test_html_body_is_refused_and_not_cached(env, server, registered, how):
    entry = registered(hub_entry("test/portal", None))  # no sha256: only the content check can tell
    path = serve_entry(server, entry, _PORTAL if how == "sniffed" else st_bytes(make_unet(3)))
    if how == "content-type":
        server.content_type[path] = "text/html; charset=utf-8"
    folder = _fetch.hub_cache_path(env, entry.repo_id, entry.revision, "x").parent
    with pytest.raises(hub.DownloadError, match="HTML page") as err:
        hub.load_denoiser("test/portal", progress=False)
    assert str(folder) in str(err.value)
    assert cache_files(env) == []


def test_truncated_file_with_matching_length_is_not_cached(env, server, registered):
    """A file cut short at the source (Content-Length agrees with the short body): the safetensors header
    no longer fits, so it is refused instead of being cached as complete."""
    unet = make_unet(4)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/short", None))
    path = serve_entry(server, entry, data[: len(data) - 100])
    with pytest.raises(_download.InvalidFileError, match="header describes"):
        hub.load_denoiser("test/short", progress=False)
    assert cache_files(env) == []
    server.files[path] = data
    assert_same_model(hub.load_denoiser("test/short", progress=False), unet)


def test_generic_repo_is_not_marked_complete_until_its_json_parses(env, server):
    unet = make_unet(5)
    root = "/someone/broken/resolve/main/"
    server.files[root + "config.json"] = b'{"_class_name": "UNet2DModel", "sample_si'  # cut JSON
    server.files[root + "diffusion_pytorch_model.safetensors"] = st_bytes(unet)
    with pytest.raises(_download.InvalidFileError, match="not valid JSON"):
        hub.load_denoiser("someone/broken", progress=False)
    assert not list(env.rglob(".robaug-complete")) and not list(env.rglob("config.json"))
    server.files[root + "config.json"] = json.dumps({"_class_name": "UNet2DModel", **tiny_unet_config()}).encode()
    assert_same_model(hub.load_denoiser("someone/broken", progress=False), unet)
    assert list(env.rglob(".robaug-complete"))


def test_damaged_cache_from_an_older_version_names_the_folder(env, server, registered):
    entry = registered(hub_entry("test/damaged", None))
    cached = _fetch.hub_cache_path(env, entry.repo_id, entry.revision, "diffusion_pytorch_model.safetensors")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_PORTAL)  # what robaug < this version cached from a captive portal
    with pytest.raises(_fetch.CorruptCacheError, match="Delete the cache folder") as err:
        hub.load_denoiser("test/damaged", progress=False)
    assert str(cached.parent) in str(err.value) and server.log == []


def _hf_snapshot(hf_home: Path, repo_id: str, revision: str, filename: str, data: bytes) -> Path:
    """The layout huggingface_hub writes: blobs/<hash> + snapshots/<commit>/<file> symlink + refs/main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    snap = repo / "snapshots" / revision / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    snap.symlink_to(os.path.relpath(blob, snap.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return blob


def test_weights_in_the_hugging_face_cache_are_reused_after_a_sha256_check(env, server, registered, tmp_path,
                                                                           monkeypatch):
    unet = make_unet(6)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/in-hf", hashlib.sha256(data).hexdigest()))
    blob = _hf_snapshot(tmp_path / "hf-home", entry.repo_id, entry.revision, "diffusion_pytorch_model.safetensors",
                        data)
    monkeypatch.setenv("ROBAUG_OFFLINE", "1")  # works offline: nothing is downloaded
    assert_same_model(hub.load_denoiser("test/in-hf", progress=False), unet)
    cached = _fetch.hub_cache_path(env, entry.repo_id, entry.revision, "diffusion_pytorch_model.safetensors")
    assert cached.stat().st_ino == blob.stat().st_ino  # hard link, no second copy
    assert server.log == []

    # a Hugging Face copy that does not match the pinned sha256 is ignored and the file is downloaded
    other = registered(hub_entry("test/in-hf-bad", hashlib.sha256(data).hexdigest()))
    _hf_snapshot(tmp_path / "hf-home", other.repo_id, other.revision, "diffusion_pytorch_model.safetensors",
                 st_bytes(make_unet(7)))
    serve_entry(server, other, data)
    monkeypatch.delenv("ROBAUG_OFFLINE")
    assert_same_model(hub.load_denoiser("test/in-hf-bad", progress=False), unet)
    assert len(server.log) == 1


def test_leftover_part_files_are_swept_and_files_keep_the_umask(env, server, registered):
    unet = make_unet(8)
    data = st_bytes(unet)
    entry = registered(hub_entry("test/umask", None))
    serve_entry(server, entry, data)
    cached = _fetch.hub_cache_path(env, entry.repo_id, entry.revision, "diffusion_pytorch_model.safetensors")
    cached.parent.mkdir(parents=True)
    stale = cached.parent / f".{cached.name}.0123456789ab.part"  # a killed download's leftover
    stale.write_bytes(data[:1000])
    old = os.umask(0o027)
    try:
        assert_same_model(hub.load_denoiser("test/umask", progress=False), unet)
    finally:
        os.umask(old)
    assert not stale.exists()
    assert sorted(p.name for p in cached.parent.iterdir()) == [cached.name]
    assert (cached.stat().st_mode & 0o777) == 0o640


# ------------------------------------------------------------------------------------------------------
# Local paths and the safetensors-only rule
# ------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any unpickling during the test is a failure."""
    def boom(*args, **kwargs):
        raise AssertionError("robaug.hub must never unpickle")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)


def test_local_safetensors_with_json_sibling(tmp_path, no_unpickling):
    unet = make_unet(10, num_class_embeds=5)
    save_file({k: v.half().contiguous() for k, v in unet.state_dict().items()}, tmp_path / "m.safetensors")
    sha = hashlib.sha256((tmp_path / "m.safetensors").read_bytes()).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps({"unet": tiny_unet_config(5), "scheduler": SCHED,
                                                  "null_label": 4, "num_classes": 4, "sha256": sha}))
    d = hub.load_denoiser(tmp_path / "m.safetensors")  # fp16 file -> float32 model by default
    assert next(d.unet.parameters()).dtype == torch.float32
    assert d.null_label == 4 and d.num_classes == 4
    rounded = make_unet(10, num_class_embeds=5)
    rounded.load_state_dict({k: v.half().float() for k, v in unet.state_dict().items()})
    assert_same_model(d, rounded, torch.tensor([0, 3, 4]), null_label=4)
    # the folder holding one pair works too, and dtype= is honoured
    d64 = hub.load_denoiser(str(tmp_path), dtype=torch.float64)
    assert next(d64.unet.parameters()).dtype == torch.float64
    # a json whose sha256 does not match the file is caught
    (tmp_path / "m.json").write_text(json.dumps({"unet": tiny_unet_config(5), "sha256": "1" * 64}))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        hub.load_denoiser(tmp_path / "m.safetensors")


def test_diffusers_model_folder_and_pipeline_folder(tmp_path, no_unpickling):
    unet = make_unet(11)
    model_dir = tmp_path / "model"
    unet.save_pretrained(model_dir, safe_serialization=True)
    DDPMScheduler.from_config(SCHED).save_pretrained(model_dir)
    assert (model_dir / "diffusion_pytorch_model.safetensors").is_file()
    assert_same_model(hub.load_denoiser(model_dir), unet)
    assert_same_model(hub.load_denoiser(model_dir / "diffusion_pytorch_model.safetensors"), unet)

    pipe_dir = tmp_path / "pipe"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(SCHED)).save_pretrained(pipe_dir)
    assert (pipe_dir / "unet" / "config.json").is_file() and (pipe_dir / "scheduler").is_dir()
    assert_same_model(hub.load_denoiser(pipe_dir), unet)


def test_other_schedules_are_read_from_the_folder(tmp_path):
    unet = make_unet(12)
    unet.save_pretrained(tmp_path, safe_serialization=True)
    cos = {**SCHED, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction"}
    DDPMScheduler.from_config(cos).save_pretrained(tmp_path / "scheduler")
    d = hub.load_denoiser(tmp_path)
    assert d.prediction_type == "v_prediction"
    ref = DiffusersDenoiser(unet, cos)
    assert torch.equal(outputs(d), outputs(ref))
    assert torch.equal(d.timestep_sigmas, ref.timestep_sigmas)


def test_legacy_attention_key_names_are_mapped(tmp_path):
    """Checkpoints converted from early diffusers (e.g. the google/ddpm-* .bin files) call the attention
    projections query/key/value/proj_attn."""
    unet = make_unet(13)
    rename = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for k, v in unet.state_dict().items():
        for new, legacy in rename.items():
            if ".attentions." in k and f".{new}." in k:
                k = k.replace(f".{new}.", f".{legacy}.")
        old[k] = v.contiguous()
    assert any(".query." in k for k in old)
    save_file(old, tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps({"unet": tiny_unet_config(), "scheduler": SCHED}))
    assert_same_model(hub.load_denoiser(tmp_path / "m.safetensors"), unet)


def test_pickle_checkpoints_are_refused(tmp_path, no_unpickling):
    bin_path = tmp_path / "diffusion_pytorch_model.bin"
    bin_path.write_bytes(b"\x80\x04 pretend pickle")
    with pytest.raises(hub.UnsafeWeightsError, match="pickle"):
        hub.load_denoiser(bin_path)
    for suffix in (".pt", ".pth", ".ckpt"):
        with pytest.raises(hub.UnsafeWeightsError):
            hub.load_denoiser(_touch(tmp_path / f"w{suffix}"))
    # a diffusers folder that only has the pickled weights
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel", **tiny_unet_config()}))
    with pytest.raises(hub.UnsafeWeightsError, match="safetensors"):
        hub.load_denoiser(tmp_path)
    # a registry entry cannot even list such a file
    with pytest.raises(ValueError, match="never unpickles"):
        WeightFile("diffusion_pytorch_model.bin")
    # a pickle renamed to .safetensors is rejected by the safetensors parser, not unpickled
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(pickle.dumps({"w": 1}))
    (tmp_path / "fake.json").write_text(json.dumps({"unet": tiny_unet_config()}))
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        hub.load_denoiser(fake)


def _touch(p: Path) -> Path:
    p.write_bytes(b"x")
    return p


def test_weights_that_do_not_fit_the_config_are_rejected(tmp_path):
    unet = make_unet(15)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp_path / "m.safetensors")
    wrong = {**tiny_unet_config(), "block_out_channels": [8, 32]}
    (tmp_path / "m.json").write_text(json.dumps({"unet": wrong, "scheduler": SCHED}))
    with pytest.raises(ValueError, match="do not fit"):
        hub.load_denoiser(tmp_path / "m.safetensors")
    (tmp_path / "m.json").write_text(json.dumps({"unet": tiny_unet_config(3), "scheduler": SCHED}))
    with pytest.raises(ValueError, match="missing key"):
        hub.load_denoiser(tmp_path / "m.safetensors")


def test_unknown_name_lists_the_registry(env, server):
    with pytest.raises(ValueError, match="fmnist-ddpm"):
        hub.load_denoiser("definitely not a model")
    # a missing relative path that looks like owner/name is tried on the Hub, and the error says so
    with pytest.raises(hub.RemoteFileNotFoundError, match="no such local path exists"):
        hub.load_denoiser("runs/not-there", progress=False)


# ------------------------------------------------------------------------------------------------------
# Registry and the built-in model
# ------------------------------------------------------------------------------------------------------


def test_registry_contents_and_published_sizes():
    names = hub.list_pretrained()
    for n in ("fmnist-ddpm", "google/ddpm-cifar10-32", "google/ddpm-celebahq-256", "google/ddpm-church-256",
              "google/ddpm-bedroom-256", "google/ddpm-cat-256"):
        assert n in names
    # the inline architectures must match the published safetensors: 143 MB and 455 MB of float32
    for name, mb in (("google/ddpm-cifar10-32", 143), ("google/ddpm-cat-256", 455), ("google/ddpm-church-256", 455)):
        e = hub.get_entry(name)
        with torch.device("meta"):
            m = UNet2DModel.from_config({k: v for k, v in e.unet_config.items() if not k.startswith("_")})
        n_bytes = 4 * sum(t.numel() for t in m.state_dict().values())
        assert abs(n_bytes / 1e6 - mb) < 1.0, (name, n_bytes)
        assert e.weights_file.filename.endswith(".safetensors")
    cifar = hub.get_entry("google/ddpm-cifar10-32")
    assert cifar.pinned and len(cifar.revision) == 40 and cifar.weights_file.sha256
    assert not hub.get_entry("google/ddpm-church-256").pinned
    with pytest.raises(ValueError, match="already registered"):
        hub.register_weights(cifar)


def test_cache_dir_precedence(tmp_path, monkeypatch):
    from robaug.hub._env import resolve_cache_dir

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("ROBAUG_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_cache_dir() == tmp_path / "env"
    monkeypatch.delenv("ROBAUG_CACHE")
    assert resolve_cache_dir() == Path.home() / ".cache" / "robaug"


def test_package_entry_code_path(tmp_path, monkeypatch, registered, no_unpickling):
    """The built-in entry type: files inside robaug/weights (here redirected to a temp dir), checked
    against the sha256 recorded in its JSON."""
    unet = make_unet(16, num_class_embeds=3)
    save_file({k: v.contiguous() for k, v in unet.state_dict().items()}, tmp_path / "pkg.safetensors")
    sha = hashlib.sha256((tmp_path / "pkg.safetensors").read_bytes()).hexdigest()
    (tmp_path / "pkg.json").write_text(json.dumps({"unet": tiny_unet_config(3), "scheduler": SCHED,
                                                    "null_label": 2, "sha256": sha}))
    monkeypatch.setattr(_fetch, "package_path", lambda f: tmp_path / f)
    registered(WeightsEntry(name="test-pkg", source="package",
                            files=(WeightFile("pkg.safetensors"), WeightFile("pkg.json"))))
    monkeypatch.setattr(_download, "_open", lambda *a, **k: pytest.fail("network used for a shipped model"))
    assert_same_model(hub.load_denoiser("test-pkg"), unet, torch.tensor([0, 1, 2]), null_label=2)
    with open(tmp_path / "pkg.safetensors", "r+b") as f:  # corrupt one byte near the end
        f.seek(-3, os.SEEK_END)
        f.write(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="sha256 mismatch"):
        hub.load_denoiser("test-pkg")


_FMNIST = WEIGHTS_DIR / "fmnist-ddpm.safetensors"


@pytest.mark.skipif(not _FMNIST.is_file(), reason="built-in weights not exported yet")
def test_builtin_fmnist_ddpm(monkeypatch, no_unpickling):
    monkeypatch.setenv("ROBAUG_OFFLINE", "1")  # shipped with the package: never downloads
    d = hub.load_denoiser("fmnist-ddpm")
    assert d.in_channels == 1 and d.null_label == 10 and d.num_classes == 10
    meta = json.loads(_FMNIST.with_suffix(".json").read_text())
    expected = hub.get_entry("fmnist-ddpm").weights_file.sha256 or meta["sha256"]
    assert hashlib.sha256(_FMNIST.read_bytes()).hexdigest() == expected
    x0 = torch.zeros(2, 1, 28, 28)
    with torch.no_grad():
        out = d(x0 + 0.1 * torch.randn_like(x0), torch.tensor([0.1, 0.1]), torch.tensor([0, 10]))
    assert out.shape == x0.shape and torch.isfinite(out).all()


def test_builtin_layout_written_by_the_training_recipe_loads(tmp_path, monkeypatch, no_unpickling):
    """examples/train_denoiser.py's export() writes the files the built-in entry reads; check the two agree
    (with an untrained model of the recipe's architecture, exported in float16 as the recipe does)."""
    import importlib.util

    script = SOURCE_ROOT / "examples" / "train_denoiser.py"
    if not script.is_file():
        pytest.skip("examples/train_denoiser.py not present")
    spec = importlib.util.spec_from_file_location("train_denoiser_for_test", script)
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    torch.manual_seed(0)
    model = UNet2DModel(**recipe.UNET_CONFIG).eval()
    recipe.export(model, tmp_path, "fmnist-ddpm", torch.float16, {"training": {"command": "test"}})

    monkeypatch.setattr(_fetch, "package_path", lambda f: tmp_path / f)
    # the real registry entry, files redirected to tmp_path; its pinned hash is that of the shipped weights,
    # so pin the hash the export recorded for this untrained model instead
    import dataclasses
    import json

    from robaug.hub import registry

    entry = registry.get_entry("fmnist-ddpm")
    exported_sha = json.loads((tmp_path / "fmnist-ddpm.json").read_text())["sha256"]
    files = tuple(dataclasses.replace(f, sha256=exported_sha) if f.filename.endswith(".safetensors") else f
                  for f in entry.files)
    monkeypatch.setitem(registry._REGISTRY._items, "fmnist-ddpm", dataclasses.replace(entry, files=files))
    d = hub.load_denoiser("fmnist-ddpm")
    assert d.in_channels == 1 and d.null_label == 10 and d.num_classes == 10 and d.sample_size == 28
    rounded = UNet2DModel(**recipe.UNET_CONFIG).eval()
    rounded.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    ref = DiffusersDenoiser(rounded, recipe.SCHEDULER_CONFIG, null_label=10)
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        args = (x, torch.tensor([0.3, 3.0]), torch.tensor([1, 10]))
        assert torch.equal(d(*args), ref(*args))
