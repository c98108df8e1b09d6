"""A GGUF bundle (`nanoforge export BUNDLE --format gguf`: a decoder, a classifier or a span
tagger) answered by nanoforge's native runtime, `nanoforge-run` (native/, built by `make
native`), over a pipe: one JSON request per line in, one answer per line out, the same answers
as the ONNX runtime gives.

    nano = load("runs/en-ja/gguf")          # a bundle whose model.runtime is "gguf"
    nano.predict("I'm in the tennis club.")
    # {"output": "私はテニス部員です。", "confidence": 0.81, "tokens": 9, "finish": "eos", "truncated": False}

The kind's rules (gold, metrics, fallback reasons) are those of the bundle it was exported
from (`model.source`), so `nanoforge eval` reports the same JSON for both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

from nanoforge.errors import BundleError, NanoforgeError
from nanoforge.manifest import Manifest
from nanoforge.runtime.base import Nano
from nanoforge.runtime.classifier import ClassifierNano
from nanoforge.runtime.decoder import DecoderNano
from nanoforge.runtime.tagger import TaggerNano

ROOT = Path(__file__).resolve().parent.parent.parent
DECODER_KEYS = ("output", "confidence", "tokens", "finish", "truncated")


def native_binary() -> Path:
    """The `nanoforge-run` program: $NANOFORGE_RUN, else `make native`'s build, else on PATH."""
    env = os.environ.get("NANOFORGE_RUN")
    found = shutil.which("nanoforge-run")
    for c in [Path(env)] if env else [ROOT / "native" / "build" / "nanoforge-run"] + ([Path(found)] if found else []):
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise NanoforgeError("nanoforge-run (the native runtime) is not built: run `make native`, "
                         "or set NANOFORGE_RUN to its path")


class _Native:
    """The pipe to one nanoforge-run process (started on the bundle, checksums already checked)."""

    def __init__(self, bundle_dir: Path, threads: int | None, options: tuple[str, ...] = ()):
        self.dir = bundle_dir
        self.lock = threading.Lock()  # one request on the pipe at a time (the server calls from threads)
        self.proc = subprocess.Popen([str(native_binary()), str(bundle_dir), "--threads", str(threads or 1),
                                      "--no-verify", *options], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, encoding="utf-8")

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            with self.lock:
                self.proc.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
                self.proc.stdin.flush()
                line = self.proc.stdout.readline()
        except (BrokenPipeError, ValueError):
            line = ""
        if not line:
            self.proc.wait()
            raise BundleError(f"{self.dir}: nanoforge-run stopped: {self.proc.stderr.read().strip()[-500:]}")
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:  # it crashed mid-answer (llama.cpp aborts print to stdout)
            self.proc.kill()
            raise BundleError(f"{self.dir}: nanoforge-run failed: {line.strip()[:200]} "
                              f"{self.proc.stderr.read().strip()[-300:]}") from None
        if "error" in answer:
            raise NanoforgeError(answer["error"].split(": ", 1)[-1])
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)

    def __del__(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


def _init(nano: Nano, bundle_dir, threads, verify, manifest, runtime: str, options: tuple[str, ...] = ()):
    Nano.__init__(nano, bundle_dir, threads, verify, manifest)
    source = nano.manifest.model.source
    if source.runtime != runtime:  # unreachable through load(), which picks by the source
        raise BundleError(f"{nano.dir}: a GGUF export of a {source.runtime} bundle, not {runtime}")
    nano.native = _Native(nano.dir, threads, options)
    return source


class GgufDecoderNano(DecoderNano):
    """A GGUF export of a decoder bundle. The decoder's rules come from DecoderNano; its
    tokenizer and session do not (nanoforge-run tokenises and decodes with llama.cpp).
    `kv_cache="f16"`: llama.cpp's faster cache, whose logits are ~5e-3 off the Python runtime's."""

    runtime = "gguf"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 manifest: Manifest | None = None, kv_cache: str = "f32"):
        s = _init(self, bundle_dir, threads, verify, manifest, "decoder", ("--kv-cache", kv_cache))
        self.schema = self.constraint = None
        if s.schema_ is not None:  # nanoforge-run constrains the JSON; the schema scores it here
            from nanoforge.extract.schema import Schema

            self.schema = Schema.from_json_schema(s.schema_, source=f"{self.dir / 'manifest.json'}: model.source.schema")
        self.keys = DECODER_KEYS[:1] + (("valid",) if self.schema else ()) + DECODER_KEYS[1:]
        self.max_input_tokens, self.max_new_tokens = s.max_input_tokens, s.max_new_tokens

    def predict_batch(self, texts: list[str], max_new_tokens: int | None = None, temperature: float = 0.0,
                      top_p: float = 1.0, seed: int | None = None, stop: list[str] | None = None
                      ) -> list[dict[str, Any]]:
        """Answers as DecoderNano gives them. Sampling (temperature > 0) is seeded but draws
        from llama.cpp's side: the same seed need not give the ONNX runtime's tokens."""
        self.check_inputs(texts)
        options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
                   "seed": seed or 0, "stop": stop}
        return [{k: a[k] for k in self.keys} for a in (self.native.ask({"input": t, **options}) for t in texts)]

    def stream(self, text: str, **options: Any) -> Iterator[str]:
        """The answer in one piece (nanoforge-run answers whole)."""
        output = self.predict(text, **options)["output"]
        if output:
            yield self.as_text(output)

    def timing(self, text: str, max_new_tokens: int | None = None) -> dict[str, float]:
        a = self.native.ask({"input": text, "max_new_tokens": max_new_tokens, "timing": True})
        return {"ttft_ms": a["ttft_ms"], "tokens": a["tokens"], "decode_tokens_per_s": a["decode_tokens_per_s"]}

    def close(self) -> None:
        self.native.close()


class GgufClassifierNano(ClassifierNano):
    """A GGUF export of a classifier bundle: ClassifierNano's rules, nanoforge-run's answers
    (mean-pooled BERT in llama.cpp, then the head and the gate in C++)."""

    runtime = "gguf"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 manifest: Manifest | None = None):
        s = _init(self, bundle_dir, threads, verify, manifest, "encoder-classifier")
        self.labels = list(s.labels)
        self.gate = s.gate
        self.none_word = "out_of_scope" if "none" in {x.casefold() for x in self.labels} else "none"

    def predict_batch(self, texts: list[str], batch_size: int = 16) -> list[dict[str, Any]]:
        self.check_inputs(texts)
        return [self.native.ask({"input": t}) for t in texts]

    def predict(self, text: str) -> dict[str, Any]:
        return self.predict_batch([text])[0]

    def close(self) -> None:
        self.native.close()


class GgufTaggerNano(TaggerNano):
    """A GGUF export of a span-tagger bundle: TaggerNano's rules (validity, gold, metrics),
    nanoforge-run's answers (per-token BERT states in llama.cpp, windows, the BIO head and the
    reading of typed values in C++)."""

    runtime = "gguf"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None, verify: bool = True,
                 manifest: Manifest | None = None):
        from nanoforge.extract.schema import Schema

        s = _init(self, bundle_dir, threads, verify, manifest, "encoder-tagger")
        self.schema = Schema.from_json_schema(s.schema_, source=f"{self.dir / 'manifest.json'}: model.source.schema")
        self.thresholds = dict(s.thresholds)

    def predict_batch(self, texts: list[str], batch_size: int = 16) -> list[dict[str, Any]]:
        self.check_inputs(texts)
        return [self.native.ask({"input": t}) for t in texts]

    def close(self) -> None:
        self.native.close()


def load_gguf(bundle_dir: str | Path, threads: int | None = None, manifest: Manifest | None = None) -> Nano:
    """The GGUF runtime class for the kind of bundle the file was exported from."""
    cls = {"decoder": GgufDecoderNano, "encoder-classifier": GgufClassifierNano,
           "encoder-tagger": GgufTaggerNano}.get(manifest.model.source.runtime)
    if cls is None:
        raise BundleError(f"{bundle_dir}: a GGUF export of a {manifest.model.source.runtime} bundle; "
                          "nanoforge-run answers decoders, classifiers and span taggers")
    return cls(bundle_dir, threads=threads, manifest=manifest)
