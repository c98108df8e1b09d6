"""Bundles as GGUF, for llama.cpp and the tools built on it (llama-server, Ollama, LM Studio)
and nanoforge's native runtime (native/, `nanoforge-run`).

    nanoforge export runs/en-ja --format gguf --quant q8_0 --out runs/en-ja/gguf

A decoder bundle becomes a standard `llama`-architecture GGUF: the weights (q/k rows in
llama.cpp's rotary order), the tokenizer (Unigram -> llama.cpp's UGM vocabulary, byte-level
BPE -> `gpt2`) and the prompt layout as a chat template (an Ollama `Modelfile` beside it).
A classifier bundle becomes a `bert` GGUF with mean pooling, which stock llama.cpp loads as
an embedding model; its head and gate ride along as `nanoforge.*` float arrays. A span
tagger becomes a `bert` GGUF without pooling (per-token states), its BIO head likewise and
its schema's fields as `nanoforge.fields`. Every file
carries `nanoforge.manifest`, the source bundle's manifest as JSON, which is all
`nanoforge-run` needs beside the weights and the vocabulary. The output folder is itself a
bundle (runtime `gguf`, checksums). docs/BUNDLE.md describes it.

Weights are read from the bundle's ONNX file; a bundle that ships quantised weights is
exported from its run folder's FP32 model instead (pass the run folder, or a bundle inside
one). Quantisation: f32, f16, q8_0, q5_0, q5_1, q4_0, q4_1 here (the `gguf` package);
k-quants (q4_k_m, q5_k_m, q6_k, ...) by llama.cpp's own quantiser (`nanoforge-run quantize`).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nanoforge.bundle import write_bundle
from nanoforge.errors import NanoforgeError
from nanoforge.export.weights import decoder_weights, encoder_config, encoder_weights, locate, unprune_heads
from nanoforge.manifest import Decoder, Gguf, Manifest
from nanoforge.runtime.native import native_binary

# Quantisation types the `gguf` package writes itself, and those left to llama.cpp's quantiser.
OWN_QUANTS = ("f32", "f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
NATIVE_QUANTS = ("q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_m", "q3_k_s", "q2_k")
QUANTS = OWN_QUANTS + NATIVE_QUANTS
GGUF_FILE = "model.gguf"
UNIGRAM_MODEL = "t5"


# ----------------------------------------------------------------------------- weights


def _rotary_rows(w: np.ndarray, heads: int) -> np.ndarray:
    """q/k rows from the rotate-half layout to llama.cpp's interleaved rotary pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


LLAMA_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def llama_tensors(weights: dict[str, np.ndarray], cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """torch names -> GGUF `llama` tensor names (output.weight only when not tied)."""
    out = {"token_embd.weight": weights["embed_tokens.weight"], "output_norm.weight": weights["norm.weight"]}
    head = weights.get("lm_head.weight")
    if head is not None and not (cfg.get("tie_embeddings") and np.array_equal(head, out["token_embd.weight"])):
        out["output.weight"] = head
    for layer in range(cfg["num_layers"]):
        for torch_name, gguf_name in LLAMA_NAMES.items():
            w = weights[f"layers.{layer}.{torch_name}.weight"]
            if torch_name == "self_attn.q_proj":
                w = _rotary_rows(w, cfg["num_heads"])
            elif torch_name == "self_attn.k_proj":
                w = _rotary_rows(w, cfg["num_kv_heads"])
            out[f"blk.{layer}.{gguf_name}.weight"] = w
    return out


BERT_NAMES = {"attention.self.query": "attn_q", "attention.self.key": "attn_k", "attention.self.value": "attn_v",
              "attention.output.dense": "attn_output", "attention.output.LayerNorm": "attn_output_norm",
              "intermediate.dense": "ffn_up", "output.dense": "ffn_down", "output.LayerNorm": "layer_output_norm"}


def bert_tensors(weights: dict[str, np.ndarray], layers: int) -> dict[str, np.ndarray]:
    e = "encoder.embeddings."
    out = {"token_embd.weight": weights[e + "word_embeddings.weight"],
           "position_embd.weight": weights[e + "position_embeddings.weight"],
           "token_types.weight": weights[e + "token_type_embeddings.weight"],
           "token_embd_norm.weight": weights[e + "LayerNorm.weight"], "token_embd_norm.bias": weights[e + "LayerNorm.bias"]}
    for n in range(layers):
        for torch_name, gguf_name in BERT_NAMES.items():
            for part in ("weight", "bias"):
                out[f"blk.{n}.{gguf_name}.{part}"] = weights[f"encoder.encoder.layer.{n}.{torch_name}.{part}"]
    return out


# ----------------------------------------------------------------------------- tokenizer


def add_tokenizer(w, tokenizer_json: dict[str, Any], layout: dict[str, Any]) -> None:
    """The bundle's tokenizer.json as llama.cpp's vocabulary keys."""
    import gguf

    model = tokenizer_json["model"]
    added = {t["id"]: t for t in tokenizer_json.get("added_tokens", [])}
    if model["type"] == "Unigram":  # SentencePiece-style pieces with scores
        tokens = [p for p, _ in model["vocab"]]
        scores = [float(s) for _, s in model["vocab"]]
        types = [gguf.TokenType.NORMAL] * len(tokens)
        for i, t in added.items():
            types[i] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
        if model.get("unk_id") is not None:
            types[model["unk_id"]] = gguf.TokenType.UNKNOWN
            w.add_unk_token_id(model["unk_id"])
        w.add_tokenizer_model(UNIGRAM_MODEL)
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_add_space_prefix(True)
    elif model["type"] == "BPE":  # byte-level BPE (GPT-2 style: SmolLM2)
        vocab = dict(model["vocab"])
        for i, t in added.items():
            vocab[t["content"]] = i
        tokens = [""] * (max(vocab.values()) + 1)
        for piece, i in vocab.items():
            tokens[i] = piece
        types = [gguf.TokenType.NORMAL] * len(tokens)
        for i, t in added.items():
            types[i] = gguf.TokenType.CONTROL if t.get("special") else gguf.TokenType.USER_DEFINED
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
    else:
        raise NanoforgeError(f"tokenizer model {model['type']!r} has no GGUF vocabulary here (Unigram, BPE)")
    prefix, eos = layout["prefix_ids"], layout["eos_ids"]
    if prefix:
        w.add_bos_token_id(prefix[0])
    w.add_eos_token_id(eos[0])
    w.add_pad_token_id(layout["pad_id"])
    w.add_add_bos_token(adds_bos(layout))
    w.add_add_eos_token(False)


def add_wordpiece(w, tokenizer_json: dict[str, Any]) -> None:
    """A BERT WordPiece tokenizer.json as llama.cpp's `bert` vocabulary (word starts marked
    with U+2581 instead of continuations with ##, as llama.cpp's converter writes it)."""
    import gguf

    model = tokenizer_json["model"]
    vocab = model["vocab"]
    tokens = [""] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    special = {t["id"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")}
    types = [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    tokens = [t if i in special else t[2:] if t.startswith("##") else "\u2581" + t for i, t in enumerate(tokens)]
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    ids = {name: vocab[name] for name in ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]") if name in vocab}
    if "[CLS]" not in ids or "[SEP]" not in ids:
        raise NanoforgeError("the tokenizer has no [CLS]/[SEP]: not a BERT WordPiece tokenizer")
    w.add_bos_token_id(ids["[CLS]"])
    w.add_eos_token_id(ids["[SEP]"])
    w.add_sep_token_id(ids["[SEP]"])
    for key, add in (("[PAD]", w.add_pad_token_id), ("[UNK]", w.add_unk_token_id), ("[MASK]", w.add_mask_token_id)):
        if key in ids:
            add(ids[key])
    w.add_add_bos_token(True)
    w.add_add_eos_token(True)
    # tokenizers reads a word longer than this as one [UNK] (llama.cpp has no such limit; nanoforge-run does)
    w.add_uint32("nanoforge.wordpiece.max_input_chars_per_word", int(model.get("max_input_chars_per_word", 100)))
    norm = tokenizer_json.get("normalizer") or {}
    if norm.get("type") == "BertNormalizer":  # llama.cpp's defaults are an uncased BERT's: say which this is
        lowercase = bool(norm.get("lowercase", True))
        strip = norm.get("strip_accents")
        w.add_bool("tokenizer.ggml.normalizer.lowercase", lowercase)
        w.add_bool("tokenizer.ggml.normalizer.strip_accents", lowercase if strip is None else bool(strip))


def adds_bos(layout: dict[str, Any]) -> bool:
    """Whether llama.cpp adds the layout's first token itself (a prefix of just the BOS)."""
    return len(layout["prefix_ids"]) == 1


def prompt_template(tokenizer, layout: dict[str, Any]) -> tuple[str, str]:
    """(text before the input, text after it) as stock tools are to be given it: the layout's
    special ids as text, without the BOS that llama.cpp adds itself."""
    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)
    prefix = [] if adds_bos(layout) else layout["prefix_ids"]
    return text(prefix), text(layout["suffix_ids"])


# ----------------------------------------------------------------------------- writing


# Tensors llama.cpp adds to activations (ggml_add takes no quantised operand): always F32.
KEEP_F32 = ("position_embd.weight", "token_types.weight")


def _quantise(name: str, w: np.ndarray, quant: str):
    """(data, GGML type) of one tensor: 1-D tensors, rows that do not fill a block and the
    tensors of KEEP_F32 stay F32."""
    import gguf

    qtype = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0, "q5_1": gguf.GGMLQuantizationType.Q5_1,
             "q5_0": gguf.GGMLQuantizationType.Q5_0, "q4_1": gguf.GGMLQuantizationType.Q4_1,
             "q4_0": gguf.GGMLQuantizationType.Q4_0}[quant]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if w.ndim < 2 or qtype == gguf.GGMLQuantizationType.F32 or w.shape[-1] % block or name in KEEP_F32:
        return np.ascontiguousarray(w, dtype=np.float32), gguf.GGMLQuantizationType.F32
    return gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype), qtype


FILE_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9}


def _start(arch: str, path: Path, manifest: Manifest, quant: str):
    """A writer with the keys every nanoforge GGUF has: name, file type, the source manifest."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"{manifest.name}-{manifest.version}")
    w.add_file_type(FILE_TYPES[quant])
    w.add_string("nanoforge.manifest", json.dumps(manifest.to_dict(), ensure_ascii=False))
    return w


def _finish(w, tensors: dict[str, np.ndarray], quant: str, path: Path) -> Path:
    for name, t in tensors.items():
        data, qtype = _quantise(name, t, quant)
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_decoder_gguf(path: Path, manifest: Manifest, onnx_file: Path, tokenizer_file: Path, quant: str) -> Path:
    from tokenizers import Tokenizer

    section: Decoder = manifest.model
    cfg = section.config
    tensors = llama_tensors(decoder_weights(onnx_file), cfg)
    w = _start("llama", path, manifest, quant)
    w.add_context_length(int(cfg["max_position"]))
    w.add_embedding_length(int(cfg["hidden_size"]))
    w.add_block_count(int(cfg["num_layers"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_head_count(int(cfg["num_heads"]))
    w.add_head_count_kv(int(cfg["num_kv_heads"]))
    head_dim = int(cfg.get("head_size") or int(cfg["hidden_size"]) // int(cfg["num_heads"]))
    if head_dim * int(cfg["num_heads"]) != int(cfg["hidden_size"]):  # pruned heads: llama.cpp's own keys
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(cfg["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg["rms_eps"]))
    w.add_vocab_size(int(cfg["vocab_size"]))
    layout = section.prompt.to_dict()
    add_tokenizer(w, json.loads(tokenizer_file.read_text(encoding="utf-8")), layout)
    before, after = prompt_template(Tokenizer.from_file(str(tokenizer_file)), layout)
    # The chat template llama-server and Ollama apply: the last user message inside the layout.
    w.add_chat_template("{%- for m in messages %}{%- if m['role'] == 'user' %}" + _jinja(before)
                        + "{{ m['content'] }}" + _jinja(after) + "{%- endif %}{%- endfor %}")
    if section.schema_ is not None:  # what the constraint reads, computed once here (nanoforge.runtime)
        from nanoforge.extract.schema import Schema
        from nanoforge.runtime.decoder import token_pieces

        pieces, strip_first = token_pieces(Tokenizer.from_file(str(tokenizer_file)))
        w.add_string("nanoforge.constraint.schema", json.dumps(Schema.from_json_schema(section.schema_).json_schema(),
                                                               ensure_ascii=False))
        w.add_array("nanoforge.constraint.pieces", pieces)
        w.add_bool("nanoforge.constraint.strip_first", strip_first)
    return _finish(w, tensors, quant, path)


def write_encoder_gguf(path: Path, manifest: Manifest, onnx_file: Path, bundle: Path, quant: str) -> Path:
    """A `bert` GGUF that stock llama.cpp loads as an embedding model (mean pooling for a
    classifier, none for a span tagger); the task head and the gate ride along as `nanoforge.*`
    float arrays (llama.cpp refuses extra tensors), a tagger's fields as `nanoforge.fields`."""
    import gguf

    s = manifest.model
    config_file, cfg = encoder_config(bundle, manifest)
    if cfg.get("model_type") != "bert":
        raise NanoforgeError(f"{config_file}: a {cfg.get('model_type')!r} encoder; GGUF export covers BERT")
    weights, cfg = unprune_heads(encoder_weights(onnx_file), cfg)  # llama.cpp's bert: full-width heads
    w = _start("bert", path, manifest, quant)
    w.add_context_length(int(cfg["max_position_embeddings"]))
    w.add_embedding_length(int(cfg["hidden_size"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_block_count(int(cfg["num_hidden_layers"]))
    w.add_head_count(int(cfg["num_attention_heads"]))
    w.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
    w.add_causal_attention(False)
    tagger = s.runtime == "encoder-tagger"  # per-token states (no pooling) for the BIO head
    w.add_pooling_type(gguf.PoolingType.NONE if tagger else gguf.PoolingType.MEAN)
    w.add_token_type_count(int(cfg.get("type_vocab_size", 2)))
    add_wordpiece(w, json.loads((bundle / s.tokenizer).read_text(encoding="utf-8")))
    head_w, head_b = weights["head.weight"], weights["head.bias"]
    w.add_array("nanoforge.head.shape", list(head_w.shape))
    w.add_array("nanoforge.head.weight", head_w.astype(np.float32).ravel().tolist())
    w.add_array("nanoforge.head.bias", head_b.astype(np.float32).ravel().tolist())
    if tagger:  # the schema's fields, read once here (nanoforge.extract.schema) for the C++ side
        from nanoforge.extract.schema import Schema

        schema = Schema.from_json_schema(s.schema_)
        w.add_string("nanoforge.fields", json.dumps(
            [{"name": f.name, "type": f.type, "enum": f.enum, "required": f.required, "nullable": f.nullable}
             for f in schema.fields], ensure_ascii=False))
    gate = getattr(s, "gate", None)
    if gate is not None and gate.file:
        from safetensors.numpy import load_file

        for name, value in load_file(str(bundle / gate.file)).items():
            w.add_array(f"nanoforge.gate.{name}", value.astype(np.float32).ravel().tolist())
    return _finish(w, bert_tensors(weights, int(cfg["num_hidden_layers"])), quant, path)


def _jinja(text: str) -> str:
    return "{{ " + json.dumps(text) + " }}" if text else ""


def modelfile(manifest: Manifest, before: str, after: str) -> str:
    """An Ollama Modelfile: the prompt layout as its template, the eos and greedy decoding."""
    s: Decoder = manifest.model
    template = (before + "{{ .Prompt }}" + after).replace('"""', '\\"\\"\\"')
    lines = [f"# {manifest.name} {manifest.version} ({manifest.kind}), exported by nanoforge",
             f"FROM ./{GGUF_FILE}", f'TEMPLATE """{template}"""',
             "PARAMETER temperature 0", f"PARAMETER num_predict {s.max_new_tokens}",
             f"PARAMETER num_ctx {s.config['max_position']}"]
    return "\n".join(lines) + "\n"


def export_gguf(source: str | Path, out: str | Path, quant: str = "f32") -> Path:
    """Write a GGUF bundle of `source` (a bundle or a run folder) into `out`."""
    if quant not in QUANTS:
        raise NanoforgeError(f"--quant {quant!r}: not one of {', '.join(QUANTS)}")
    bundle, manifest, onnx_file = locate(Path(source))
    runtime = manifest.model.runtime
    from tokenizers import Tokenizer

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix=".gguf-", dir=out.parent if out.parent.exists() else None) as tmp:
        tmp = Path(tmp)
        own = quant if quant in OWN_QUANTS else "f32"
        files = {}
        if runtime == "decoder":
            path = write_decoder_gguf(tmp / f"model.{own}.gguf", manifest, onnx_file,
                                      bundle / manifest.model.tokenizer, own)
            before, after = prompt_template(Tokenizer.from_file(str(bundle / manifest.model.tokenizer)),
                                            manifest.model.prompt.to_dict())
            (tmp / "Modelfile").write_text(modelfile(manifest, before, after))
            files["Modelfile"] = tmp / "Modelfile"
        else:
            path = write_encoder_gguf(tmp / f"model.{own}.gguf", manifest, onnx_file, bundle, own)
        if quant not in OWN_QUANTS:  # llama.cpp's quantiser, from the F32 file
            quantised = tmp / GGUF_FILE
            run = subprocess.run([str(native_binary()), "quantize", str(path), str(quantised), quant],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                raise NanoforgeError(f"llama.cpp's quantiser failed on {quant}: {run.stderr.strip()[-300:]}")
            path = quantised
        else:
            path = path.rename(tmp / GGUF_FILE)
        files[GGUF_FILE] = path
        section = Gguf(runtime="gguf", file=GGUF_FILE, architecture="llama" if runtime == "decoder" else "bert",
                       quant=quant,
                       parameters=manifest.model.parameters, source=manifest.model)
        gguf_manifest = manifest.model_copy(update={"model": section, "metrics": {
            "source": {"bundle": str(bundle), "precision": manifest.model.precision,
                       "weights": onnx_file.name}}})
        return write_bundle(out, gguf_manifest, files)

