"""A static site for a bundle: the bundle's files, the JS SDK (web/src), onnxruntime-web's
WASM files and tokenizers.js from web/node_modules (never a CDN), and a demo page.

    nanoforge export runs/demo/bundle --format web --out site/
    nanoforge web runs/demo/bundle --port 8765          # the same folder, served on localhost

Layout: `nano/` (the bundle, checked before it is copied), `sdk/` (the SDK's ES modules),
`vendor/` (ort.wasm.min.mjs, ort-wasm-simd-threaded.{mjs,wasm}, tokenizers.min.mjs) and
`index.html`, whose import map points the SDK's bare imports at `vendor/`. Any static host
serves it; threads need the COOP/COEP headers `server` sends. Reads only the bundle: no torch.
"""

from __future__ import annotations

import gzip
import http.server
import json
import shutil
import threading
from functools import partial
from pathlib import Path

from nanoforge.bundle import read_manifest
from nanoforge.errors import NanoforgeError

WEB = Path(__file__).resolve().parent.parent.parent / "web"
VENDOR = {  # file in the site's vendor/ -> where it is in web/node_modules
    "ort.wasm.min.mjs": "onnxruntime-web/dist/ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.mjs": "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm": "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    "tokenizers.min.mjs": "@huggingface/tokenizers/dist/tokenizers.min.mjs",
}
IMPORT_MAP = {"imports": {"onnxruntime-web": "./vendor/ort.wasm.min.mjs",
                          "@huggingface/tokenizers": "./vendor/tokenizers.min.mjs"}}
# The headers that make a page cross-origin isolated (SharedArrayBuffer: WASM threads).
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}


def export_web(bundle_dir: str | Path, out: str | Path) -> Path:
    """Write the static site for `bundle_dir` into `out` (replaced if it is an earlier site)."""
    bundle_dir, out = Path(bundle_dir), Path(out)
    manifest = read_manifest(bundle_dir, verify=True)  # checksums checked before anything is copied
    modules = WEB / "node_modules"
    missing = [src for src in VENDOR.values() if not (modules / src).is_file()]
    if missing:
        raise NanoforgeError(f"{modules / missing[0]} is missing: run `make web` (npm ci in {WEB}) first")
    if out.exists():
        if not (out / "index.html").is_file() or not (out / "nano" / "manifest.json").is_file():
            raise NanoforgeError(f"--out {out}: exists and is not a nanoforge web folder; choose another")
        shutil.rmtree(out)
    (out / "vendor").mkdir(parents=True)
    shutil.copytree(bundle_dir, out / "nano")
    shutil.copytree(WEB / "src", out / "sdk", ignore=shutil.ignore_patterns("*.d.ts"))
    for name, src in VENDOR.items():
        shutil.copyfile(modules / src, out / "vendor" / name)
    page = (WEB / "demo" / "index.html").read_text()
    # the import map, then every module the page imports, fetched at once instead of level by level
    preload = [f"sdk/{p.name}" for p in sorted((out / "sdk").glob("*.js"))] + [
        f"vendor/{name}" for name in VENDOR if name.endswith(".mjs")]
    head = [f'<script type="importmap">{json.dumps(IMPORT_MAP)}</script>'] + [
        f'<link rel="modulepreload" href="./{m}">' for m in preload]
    page = page.replace("<!--IMPORT_MAP-->", "\n".join(head))
    page = page.replace("{{NAME}}", f"{manifest.name} {manifest.version}").replace("{{KIND}}", manifest.kind)
    (out / "index.html").write_text(page)
    return out


def site_bytes(site: str | Path) -> dict[str, int]:
    """What a first visit downloads: every file of the site, raw and gzip-compressed (level 6,
    as `serve` sends them)."""
    raw = packed = 0
    for f in Path(site).rglob("*"):
        if f.is_file() and f.suffix not in (".gz", ".tmp"):
            data = f.read_bytes()
            raw += len(data)
            packed += len(gzip.compress(data, 6))
    return {"raw": raw, "gzip": packed}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files with the isolation headers; a gzip copy (written once, beside the file as
    NAME.gz) to clients that accept it, as a static host or CDN compresses what it serves."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}
    _lock = threading.Lock()

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if "gzip" not in self.headers.get("Accept-Encoding", "") or not path.is_file() or path.suffix == ".gz":
            return super().send_head()
        packed = path.with_name(path.name + ".gz")
        with self._lock:
            if not packed.is_file() or packed.stat().st_mtime < path.stat().st_mtime:
                tmp = packed.with_name(packed.name + ".tmp")
                tmp.write_bytes(gzip.compress(path.read_bytes(), 6))
                tmp.replace(packed)
        f = packed.open("rb")
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(packed.stat().st_size))
        self.end_headers()
        return f

    def end_headers(self) -> None:
        for k, v in ISOLATION_HEADERS.items():
            self.send_header(k, v)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: a page load is ~10 requests
        pass


def server(site: str | Path, host: str = "127.0.0.1", port: int = 8765) -> http.server.ThreadingHTTPServer:
    """An HTTP server of `site` with the cross-origin isolation headers (port 0: any free port)."""
    try:
        return http.server.ThreadingHTTPServer((host, port), partial(_Handler, directory=str(site)))
    except OSError as e:
        raise NanoforgeError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror})") from None
