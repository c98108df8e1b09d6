"""Bundles for Apple's MLX: a decoder as a folder mlx-lm loads, an encoder for nanoforge.runtime.mlx.

    nanoforge export runs/en-ja --format mlx --out runs/en-ja/mlx              # float32
    nanoforge export runs/en-ja --format mlx --bits 4 --out runs/en-ja/mlx-q4  # MLX's 4-bit affine

A decoder becomes Hugging Face Llama names (`model.layers.N.self_attn.q_proj.weight`, ...,
`lm_head.weight` unless tied) with a Llama `config.json` and the tokenizer, which is what
mlx-lm's `load` reads; with `--bits`, every Linear whose input width divides by the group size
is quantised by `mlx.core.quantize` (`weight`, `scales`, `biases`; `quantization` in the config,
as mlx-lm writes it), the embeddings stay float. An encoder keeps the student's own names (a
BertModel under `encoder.`, the head as `head.`) with its BERT config. Weights come from the
bundle (export/weights.py); the folder is a bundle (runtime `mlx`, checksums).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from nanoforge.bundle import write_bundle
from nanoforge.errors import NanoforgeError
from nanoforge.export.weights import decoder_weights, encoder_config, encoder_weights, locate, unprune_heads
from nanoforge.manifest import Decoder, Manifest, Mlx

BITS = (4, 8)


def llama_config(section: Decoder, manifest: Manifest) -> dict:
    c = section.config
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c["hidden_size"],
            "intermediate_size": c["intermediate_size"], "num_hidden_layers": c["num_layers"],
            "num_attention_heads": c["num_heads"], "num_key_value_heads": c["num_kv_heads"],
            "max_position_embeddings": c["max_position"], "rope_theta": c["rope_theta"], "rms_norm_eps": c["rms_eps"],
            "vocab_size": c["vocab_size"], "tie_word_embeddings": bool(c["tie_embeddings"]), "hidden_act": "silu",
            "attention_bias": False, "mlp_bias": False, "torch_dtype": "float32",
            "bos_token_id": (section.prompt.prefix_ids or [None])[0], "eos_token_id": section.prompt.eos_ids[0],
            **({"head_dim": c["head_size"]} if c.get("head_size") else {})}  # pruned heads keep their width


def decoder_tensors(onnx_file: Path, section: Decoder) -> dict[str, np.ndarray]:
    weights = decoder_weights(onnx_file)
    tied = section.config["tie_embeddings"]
    out = {}
    for name, w in weights.items():
        if name == "lm_head.weight":
            if not (tied and np.array_equal(w, weights["embed_tokens.weight"])):
                out[name] = w
        elif name.startswith(("embed_tokens.", "layers.", "norm.")):
            out["model." + name] = w
    return out


def quantise(tensors: dict[str, np.ndarray], bits: int, group_size: int) -> dict:
    """MLX's affine quantisation of every Linear weight (2-D, not the embeddings) whose input
    width divides by `group_size`; the rest as float32 MLX arrays."""
    import mlx.core as mx

    out = {}
    for name, w in tensors.items():
        arr = mx.array(np.ascontiguousarray(w, dtype=np.float32))
        if w.ndim == 2 and name.endswith(".weight") and "embed" not in name and w.shape[1] % group_size == 0:
            base = name[: -len(".weight")]
            out[name], out[base + ".scales"], out[base + ".biases"] = mx.quantize(arr, group_size=group_size, bits=bits)
        else:
            out[name] = arr
    return out


def tokenizer_config(section: Decoder, tokenizer_file: Path) -> dict:
    """What transformers' AutoTokenizer (and so mlx-lm) needs beside tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))

    def text(i: int | None) -> str | None:
        return None if i is None else tok.id_to_token(i)

    return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": text(section.prompt.eos_ids[0]),
            "pad_token": text(section.prompt.pad_id), "bos_token": text((section.prompt.prefix_ids or [None])[0]),
            "model_max_length": section.config["max_position"], "clean_up_tokenization_spaces": False}


def export_mlx(source: str | Path, out: str | Path, bits: int | None = None, group_size: int = 64) -> Path:
    """Write an MLX bundle of `source` (a bundle or the run folder that trained it) into `out`."""
    if bits is not None and bits not in BITS:
        raise NanoforgeError(f"--bits {bits}: not one of {', '.join(map(str, BITS))} (or none: float32)")
    try:
        import mlx.core  # noqa: F401
    except ImportError:
        raise NanoforgeError("MLX export needs MLX: pip install 'nanoforge[mlx]'") from None
    import mlx.core as mx

    bundle, manifest, onnx_file = locate(Path(source))
    s = manifest.model
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mlx-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        extra = {}
        if s.runtime == "decoder":
            tensors, config, arch = decoder_tensors(onnx_file, s), llama_config(s, manifest), "llama"
            (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(s, bundle / s.tokenizer), indent=2))
            extra["tokenizer_config.json"] = tmp / "tokenizer_config.json"
        else:
            config_file, config = encoder_config(bundle, manifest)
            arch = "bert"
            if config.get("model_type") != "bert":
                raise NanoforgeError(f"{config_file}: a {config.get('model_type')!r} encoder; MLX export covers BERT")
            tensors, config = unprune_heads(encoder_weights(onnx_file), config)
            tensors = {k: v for k, v in tensors.items() if k.startswith(("encoder.", "head."))}
        quant = {"group_size": group_size, "bits": bits} if bits else None
        if quant:
            config["quantization"] = quant
        arrays = quantise(tensors, bits, group_size) if quant else {
            k: mx.array(np.ascontiguousarray(v, dtype=np.float32)) for k, v in tensors.items()}
        mx.save_safetensors(str(tmp / "model.safetensors"), arrays, metadata={"format": "mlx"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        section = Mlx(runtime="mlx", file="model.safetensors", config="config.json", architecture=arch,
                      quantization=quant, parameters=s.parameters, source=s)
        files = {"model.safetensors": tmp / "model.safetensors", "config.json": tmp / "config.json", **extra,
                 **{f: bundle / f for f in section.files_used() if not (tmp / f).exists()}}
        return write_bundle(out, manifest.model_copy(update={"model": section, "metrics": {
            "source": {"bundle": str(bundle), "precision": s.precision, "weights": onnx_file.name}}}), files)
