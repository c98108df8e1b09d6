"""The bundle manifest, typed: a common header and one model section per runtime family.

A bundle's `manifest.json` is the only thing a runtime reads (docs/BUNDLE.md describes it
for someone writing a runtime in another language). Its body is declared here once:

    header    format_version, name, version (semver), kind (the task kind), task (the spec
              as trained), lineage, metrics, files (sha256 and size of every file)
    model     one section, chosen by its `runtime` field:
                encoder-classifier   labels (+ an out-of-scope gate, or none: a closed set)
                encoder-tagger       BIO tags over windows -> a JSON object of the schema's fields
                decoder              a causal LM with a KV cache: text, or JSON under a schema

The ONNX graph of each family (input/output names, dtypes, shapes with symbolic axes) is
declared once below; export, parity checks and every runtime read these declarations.
The JSON Schema that ships in the package (`nanoforge/schemas/manifest.schema.json`) is
generated from these models (`python -m nanoforge.manifest`); every bundle written or read
is validated against it. Format 1 bundles (before the sections) are read by `upgrade_v1`.
Torch-free: pydantic and jsonschema only.
"""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "manifest.schema.json"
# Axes whose size changes from call to call; every other axis is fixed by the model.
DYNAMIC_AXES = ("batch", "seq", "past", "total")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        return cls.model_validate(d)


# ----------------------------------------------------------------------------- graphs


class Tensor(_Model):
    name: str
    dtype: Literal["int64", "float32"]
    shape: list[Union[str, int]] = Field(description="axis sizes: an int, or a symbol (batch, seq, past, "
                                                      "total are dynamic; others are fixed by the model)")


class Graph(_Model):
    """The model file's inputs and outputs, in the order the exporter writes them."""

    inputs: list[Tensor]
    outputs: list[Tensor]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """{tensor: {axis: symbol}} of the dynamic axes, as exporters take them."""
        return {t.name: {i: s for i, s in enumerate(t.shape) if s in DYNAMIC_AXES} for t in self.inputs + self.outputs}

    def bind(self, **sizes: int) -> Graph:
        """This graph with the model's fixed axes (labels, hidden, vocab, ...) filled in."""
        def sized(t: Tensor) -> Tensor:
            return t.model_copy(update={"shape": [sizes.get(s, s) if isinstance(s, str) else s for s in t.shape]})

        return Graph(inputs=[sized(t) for t in self.inputs], outputs=[sized(t) for t in self.outputs])

    def same_io(self, other: Graph) -> bool:
        """Same tensor names and dtypes in the same order (axis sizes may differ)."""
        def sig(g: Graph):
            return [(t.name, t.dtype) for t in g.inputs], [(t.name, t.dtype) for t in g.outputs]

        return sig(self) == sig(other)


def _t(name: str, dtype: str, *shape: str) -> Tensor:
    return Tensor(name=name, dtype=dtype, shape=list(shape))


_ENCODER_INPUTS = [_t("input_ids", "int64", "batch", "seq"), _t("attention_mask", "int64", "batch", "seq")]
CLASSIFIER_GRAPH = Graph(inputs=_ENCODER_INPUTS, outputs=[_t("logits", "float32", "batch", "labels"),
                                                          _t("pooled", "float32", "batch", "hidden")])
TAGGER_GRAPH = Graph(inputs=_ENCODER_INPUTS, outputs=[_t("logits", "float32", "batch", "seq", "tags")])
_CACHE = ("layers", "batch", "kv_heads")
DECODER_GRAPH = Graph(
    inputs=[_t("input_ids", "int64", "batch", "seq"), _t("attention_mask", "int64", "batch", "total"),
            _t("position_ids", "int64", "batch", "seq"), _t("past_k", "float32", *_CACHE, "past", "head_dim"),
            _t("past_v", "float32", *_CACHE, "past", "head_dim")],
    outputs=[_t("logits", "float32", "batch", "seq", "vocab"), _t("present_k", "float32", *_CACHE, "total", "head_dim"),
             _t("present_v", "float32", *_CACHE, "total", "head_dim")])


# ----------------------------------------------------------------------------- model sections


class _Section(_Model):
    file: str = Field(description="the ONNX model, a file of the bundle")
    tokenizer: str = Field(description="a `tokenizers` tokenizer.json, a file of the bundle")
    precision: Literal["fp32", "fp16", "int8", "int4"]
    parameters: int = Field(ge=0, description="parameters of the trained model")
    graph: Graph

    def files_used(self) -> list[str]:
        return [self.file, self.tokenizer]


class GateCandidate(_Model):
    threshold: float
    valid_retention: float
    valid_oos_recall: float | None


class Gate(_Model):
    """Out-of-scope gate: an input whose score is below `threshold` is out of scope."""

    method: Literal["msp", "energy", "mahalanobis"] = Field(
        description="msp: max softmax probability; energy: logsumexp of the logits; mahalanobis: minus the "
                    "smallest Mahalanobis distance of `pooled` to a class mean (means, precision in `file`)")
    threshold: float
    file: str | None = Field(description="safetensors with `means` (labels x hidden) and `precision` "
                                               "(hidden x hidden), float32; mahalanobis only")
    target_retention: float = Field(gt=0, le=1)
    why: str = ""
    candidates: dict[str, GateCandidate] = {}


class EncoderClassifier(_Section):
    """Text -> one of `labels`; the gate may answer "out of scope" instead."""

    runtime: Literal["encoder-classifier"]
    max_length: int = Field(ge=1, description="tokens per input, special tokens included (longer inputs are cut)")
    pad_id: int
    labels: list[str] = Field(min_length=1)
    gate: Gate | None = Field(description="null: a closed label set, every input is answered")

    def files_used(self) -> list[str]:
        return super().files_used() + ([self.gate.file] if self.gate and self.gate.file else [])


class EncoderTagger(_Section):
    """Text -> a JSON object: BIO tags over overlapping windows, spans read into typed fields."""

    runtime: Literal["encoder-tagger"]
    max_length: int = Field(ge=8, description="tokens per window, special tokens included")
    stride: int = Field(ge=0, description="tokens shared by neighbouring windows")
    pad_id: int
    schema_: dict[str, Any] = Field(alias="schema", description="JSON Schema of the output object")
    tags: list[str] = Field(min_length=1, description="O, then B-<field> and I-<field> for each field in order")
    thresholds: dict[str, float | None] = Field(description="a nullable field with no tagged span answers when "
                                                "its likeliest start token's probability reaches this (null: never)")


class PromptLayout(_Model):
    """A prompt is prefix_ids + the input's tokens + suffix_ids; the answer ends at any eos id."""

    prefix_ids: list[int]
    suffix_ids: list[int]
    eos_ids: list[int] = Field(min_length=1)
    pad_id: int


class KVCache(_Model):
    """Shape of past_k / past_v: (layers, batch, kv_heads, past, head_dim), float32."""

    layers: int = Field(ge=1)
    kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)


class Decoder(_Section):
    """A causal LM with a KV cache: the prompt is filled in one call, then one token per call."""

    runtime: Literal["decoder"]
    architecture: Literal["llama"]
    config: dict[str, Any] = Field(description="the model's configuration (hidden size, layers, heads, ...)")
    prompt: PromptLayout
    max_input_tokens: int = Field(ge=1, description="input tokens kept (longer inputs are cut: `truncated`)")
    max_new_tokens: int = Field(ge=1)
    cache: KVCache
    schema_: dict[str, Any] | None = Field(alias="schema", description="JSON Schema the answer is "
                                           "constrained to (kind extract); null: free text")


OnnxSection = Annotated[Union[EncoderClassifier, EncoderTagger, Decoder], Field(discriminator="runtime")]


class Gguf(_Model):
    """The same nano as one GGUF file for llama.cpp (nanoforge-run, llama-server, Ollama).
    `source` is the ONNX bundle's model section it was exported from: its task fields
    (prompt layout, limits, labels, schema) hold here too; its files are not in this bundle."""

    runtime: Literal["gguf"]
    file: str = Field(description="the GGUF model, a file of the bundle; it carries `nanoforge.manifest` too")
    architecture: Literal["llama", "bert"]
    quant: str = Field(description="f32, f16, q8_0, q4_k_m, ...: the GGUF's weight type")
    parameters: int = Field(ge=0)
    source: OnnxSection

    def files_used(self) -> list[str]:
        return [self.file]


class Litert(_Model):
    """The same nano as one LiteRT (TFLite) file, for phones and LiteRT's interpreter. Every
    signature has fixed shapes and batch 1, int32 ids. Encoders: `len_<n>` for each n of
    `lengths` (input_ids, attention_mask [1, n] -> the family graph's outputs). Decoders:
    `prefill_<n>` (tokens [1, n], input_pos [n], kv_cache_k_<l> / kv_cache_v_<l> [1,
    cache_length, kv_heads, head_dim] for each layer l -> the caches) and `decode` (tokens [1, 1],
    input_pos [1], the caches -> logits [1, 1, vocab] and the caches). `source` is the ONNX
    section it was exported from; its tokenizer (and gate) files are in this bundle too."""

    runtime: Literal["litert"]
    file: str = Field(description="the .tflite model, a file of the bundle")
    precision: Literal["fp32", "int8"] = Field(description="the weights' type")
    quantisation: Literal["none", "dynamic", "weight-only", "matched"] = Field(
        description="dynamic: int8 weights and int8 products with activations quantised at run time; weight-only: "
                    "int8 weights, float products; matched: the ONNX INT8 bundle's own int8 weights and rounding "
                    "of each MatMul's input (per tensor, over the real tokens), integer products; none: float32")
    parameters: int = Field(ge=0)
    lengths: list[int] = Field(min_length=1, description="padded token lengths of the encoder (or prefill) "
                                                         "signatures, ascending")
    cache_length: int | None = Field(description="decoders: slots of the fixed KV cache, the longest prompt plus "
                                                  "answer (the maximum context); null for encoders")
    source: OnnxSection

    def files_used(self) -> list[str]:
        return [self.file] + [f for f in self.source.files_used() if f != self.source.file]


class Mlx(_Model):
    """The same nano for Apple's MLX: `file` (safetensors) and `config` (JSON) in Hugging Face's
    Llama (a folder mlx-lm loads) or BERT layout (with `head.*`); `source` as for litert."""

    runtime: Literal["mlx"]
    file: str = Field(description="the weights, safetensors; with `quantization`, each quantised Linear's "
                                  "`weight` (uint32-packed), `scales` and `biases` as mlx.core.quantize writes them")
    config: str = Field(description="the architecture's Hugging Face config.json")
    architecture: Literal["llama", "bert"]
    quantization: dict[str, int] | None = Field(description="{bits, group_size}; null: float32")
    parameters: int = Field(ge=0)
    source: OnnxSection

    def files_used(self) -> list[str]:
        return [self.file, self.config] + [f for f in self.source.files_used() if f != self.source.file]


Section = Annotated[Union[EncoderClassifier, EncoderTagger, Decoder, Gguf, Litert, Mlx], Field(discriminator="runtime")]
SECTIONS: dict[str, type[_Model]] = {"encoder-classifier": EncoderClassifier, "encoder-tagger": EncoderTagger,
                                     "decoder": Decoder, "gguf": Gguf, "litert": Litert, "mlx": Mlx}
GRAPHS: dict[str, Graph] = {"encoder-classifier": CLASSIFIER_GRAPH, "encoder-tagger": TAGGER_GRAPH,
                            "decoder": DECODER_GRAPH}


# ----------------------------------------------------------------------------- the header


class FileEntry(_Model):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(_Model):
    format_version: Literal[2] = FORMAT_VERSION
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="semver of this nano")
    kind: Literal["classify", "extract", "translate", "summarize"] = Field(description="the task kind")
    task: dict[str, Any] = Field(description="the task spec it was trained from (paths as given, no secrets)")
    model: Section
    lineage: dict[str, Any] = Field(default_factory=dict, description="teacher, data hash, base model, versions, "
                                    "training summary: where the nano came from")
    metrics: dict[str, Any] = Field(default_factory=dict, description="parity of the export against the "
                                    "trained model (valid), and test scores added after evaluation")
    files: dict[str, FileEntry] = Field(default_factory=dict, description="every file of the bundle but this one")

    @property
    def runtime(self) -> str:
        return self.model.runtime


# ----------------------------------------------------------------------------- schema and validation


def json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft 2020-12), as shipped in nanoforge/schemas/.

    The model section is written as `if runtime == X then section X` rather than pydantic's
    `oneOf` + `discriminator`, so any validator names the failing key of the right section."""
    schema = Manifest.model_json_schema(by_alias=True, mode="validation")
    _drop_titles(schema)
    schema["required"] = list(schema["properties"])  # every header key is written, always
    schema["properties"]["model"] = {
        "type": "object",
        "description": "the model section; `runtime` says which one",
        "required": ["runtime"],
        "properties": {"runtime": {"enum": list(SECTIONS)}},
        "allOf": [{"if": {"properties": {"runtime": {"const": r}}, "required": ["runtime"]},
                   "then": {"$ref": f"#/$defs/{cls.__name__}"}} for r, cls in SECTIONS.items()],
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "nanoforge-manifest-2",
            "title": "nanoforge bundle manifest", **schema}


def _drop_titles(node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("title"), str):
            del node["title"]
        for key, value in node.items():
            if key != "properties":
                _drop_titles(value)
            else:
                for prop in value.values():
                    _drop_titles(prop)
    elif isinstance(node, list):
        for item in node:
            _drop_titles(item)


@lru_cache(maxsize=1)
def _validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))


def schema_errors(d: Any) -> list[str]:
    """One line per problem, each naming the key (`model.max_length: 'x' is not of type 'integer'`)."""
    from jsonschema.exceptions import best_match, relevance

    out = []
    for e in sorted(_validator().iter_errors(d), key=relevance):
        while e.validator in ("anyOf", "oneOf") and e.context:  # e.g. `gate`: an object or null
            e = best_match(c for c in e.context if c.validator != "type" or c.validator_value != "null")
        path = [p for p in e.absolute_path]
        if e.validator == "required":
            path.append(e.message.split("'")[1] if "'" in e.message else "?")
            out.append(f"{_key(path)}: missing")
            continue
        msg = e.message if len(e.message) <= 160 else e.message[:157] + "..."
        out.append(f"{_key(path)}: {msg}")
    return out


def _key(path: list) -> str:
    """model.gate.method; files["model.onnx"].sha256; (top level) for the root."""
    out = ""
    for p in path:
        out += f"[{json.dumps(p)}]" if isinstance(p, int) or "." in str(p) else (f".{p}" if out else str(p))
    return out or "(top level)"


def parse(d: Any, source: str = "manifest.json") -> Manifest:
    """A manifest dict (format 1 or 2) -> a Manifest; breaking the schema raises ManifestError."""
    from nanoforge.errors import BundleError

    if not isinstance(d, dict):
        raise BundleError(f"{source}: corrupted manifest (not a JSON object)")
    fmt = d.get("format_version")
    if fmt not in READABLE_FORMATS:
        raise BundleError(f"{source}: bundle format {fmt!r} is not supported by this nanoforge "
                          f"(reads {', '.join(map(str, READABLE_FORMATS))})")
    if fmt == 1:
        d = upgrade_v1(d, source)
    runtime = (d.get("model") or {}).get("runtime") if isinstance(d.get("model"), dict) else None
    if runtime is not None and runtime not in SECTIONS:
        raise BundleError(f"{source}: model.runtime: unknown runtime {runtime!r} "
                          f"(this nanoforge runs {', '.join(SECTIONS)})")
    errors = schema_errors(d)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise BundleError(f"{source}: {errors[0]}{more}")
    return Manifest.model_validate(d)


def check(manifest: Manifest, source: str = "manifest.json") -> dict[str, Any]:
    """The manifest as a dict that validates against the shipped schema (else BundleError)."""
    d = manifest.to_dict()
    errors = schema_errors(d)
    if errors:
        from nanoforge.errors import BundleError

        raise BundleError(f"{source}: {errors[0]}")
    return d


# ----------------------------------------------------------------------------- format 1


def upgrade_v1(d: dict[str, Any], source: str = "manifest.json") -> dict[str, Any]:
    """A format-1 manifest (a flat dict, the model's details under `model`) as format 2."""
    from nanoforge.errors import BundleError

    try:
        old = dict(d["model"])
        kind = d["kind"]
        if kind == "classify":
            runtime = "encoder-classifier"
        elif kind == "extract" and old.get("architecture") != "llama":
            runtime = "encoder-tagger"
        else:
            runtime = "decoder"
        keep = {"file", "tokenizer", "precision", "parameters"}
        section: dict[str, Any] = {k: old[k] for k in keep if k in old}
        section.update(runtime=runtime, graph=GRAPHS[runtime].to_dict())
        if runtime == "encoder-classifier":
            gate = dict(d["gate"])
            section.update(max_length=old["max_length"], pad_id=old["pad_id"], labels=d["labels"],
                           gate={k: gate[k] for k in ("method", "threshold", "file", "target_retention", "why",
                                                      "candidates") if k in gate})
        elif runtime == "encoder-tagger":
            section.update(max_length=old["max_length"], stride=old["stride"], pad_id=old["pad_id"],
                           schema=d["schema"], tags=d["tags"], thresholds=old.get("thresholds") or {})
        else:
            section.update({k: old[k] for k in ("architecture", "config", "prompt", "max_input_tokens",
                                                "max_new_tokens", "cache")})
            section["schema"] = d.get("schema")
    except (KeyError, TypeError) as e:
        raise BundleError(f"{source}: corrupted format-1 manifest (bad or missing {e})") from None
    lineage = dict(d.get("lineage") or {})
    for key in ("training", "alignment"):
        if key in d:
            lineage[key] = d[key]
    metrics = dict(d.get("metrics") or {})
    if "parity" in d:
        metrics["parity"] = d["parity"]
    return {"format_version": FORMAT_VERSION, "name": d.get("name"), "version": d.get("version"), "kind": kind,
            "task": d.get("task") or {}, "model": section, "lineage": lineage, "metrics": metrics,
            "files": d.get("files")}


if __name__ == "__main__":  # python -m nanoforge.manifest > nanoforge/schemas/manifest.schema.json
    sys.stdout.write(json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n")
