"""The float weights of a bundle, for the exports to other engines (GGUF, LiteRT).

Every export reads the model the bundle ships, not a training folder: the weights come from
the bundle's ONNX file, or when the bundle ships quantised weights from the FP32 export of
the run that trained it (`OUT/export/model.fp32.onnx`). `torch_model` rebuilds the student
from those weights for exporters that trace a torch module (litert-torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nanoforge.bundle import read_manifest
from nanoforge.errors import NanoforgeError
from nanoforge.manifest import Manifest

ONNX_FAMILIES = ("decoder", "encoder-classifier", "encoder-tagger")


def locate(path: Path) -> tuple[Path, Manifest, Path]:
    """(bundle folder, its manifest, the ONNX file holding float weights): for a run folder its
    FP32 export; for a bundle its own model, or the FP32 export beside it when it is quantised."""
    run = path if (path / "bundle" / "manifest.json").is_file() else None
    bundle = path / "bundle" if run else path
    if not (bundle / "manifest.json").is_file():
        raise NanoforgeError(f"{path}: neither a bundle (no manifest.json) nor a run folder (no bundle/)")
    manifest = read_manifest(bundle, verify=True)
    model = manifest.model
    if model.runtime not in ONNX_FAMILIES:
        raise NanoforgeError(f"{bundle}: a {model.runtime} export, not an ONNX bundle; export the bundle it came from")
    onnx_file = bundle / model.file
    if run is not None and (run / "export" / "model.fp32.onnx").is_file():  # a run folder: its FP32 export
        onnx_file = run / "export" / "model.fp32.onnx"
    elif model.precision in ("int8", "int4"):
        fp32 = (run or bundle.parent) / "export" / "model.fp32.onnx"
        if not fp32.is_file():
            raise NanoforgeError(f"{bundle}: ships {model.precision} weights and no FP32 model is beside it "
                                 f"({fp32} is missing); export from the run folder that trained it")
        onnx_file = fp32
    return bundle, manifest, onnx_file


def decoder_weights(onnx_file: Path) -> dict[str, np.ndarray]:
    """The decoder's float weights under their torch names, in torch layout ([out, in])."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    quantised = {n.op_type for n in model.graph.node} & {"MatMulNBits", "MatMulInteger", "DequantizeLinear"}
    if quantised:
        raise NanoforgeError(f"{onnx_file}: holds quantised weights ({', '.join(sorted(quantised))}); "
                             "export from the FP32 model")
    inits = {i.name: numpy_helper.to_array(i).astype(np.float32) for i in model.graph.initializer}
    for node in model.graph.node:  # equal weights (e.g. norms still all ones) share one initializer
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    out = {name: w for name, w in inits.items() if not name.startswith("onnx::") and w.ndim >= 1}
    for node in model.graph.node:  # MatMul weights are named by the node that uses them
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            parts = node.name.strip("/").split("/")  # /layers.0/self_attn/q_proj/MatMul
            out[".".join(parts[:-1]) + ".weight"] = inits[node.input[1]].T
    return out


def encoder_weights(onnx_file: Path) -> dict[str, np.ndarray]:
    """The encoder's float weights under their torch names ([out, in]): a MatMul's weight is
    named by the bias its output is added to (the exporter names neither the node nor the weight)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    out = {k: v.astype(np.float32) for k, v in inits.items() if k.endswith((".weight", ".bias"))}
    adds = {i: n for n in model.graph.node if n.op_type == "Add" for i in n.input}
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits and node.output[0] in adds:
            bias = next((i for i in adds[node.output[0]].input if i.endswith(".bias")), None)
            if bias is not None:
                out[bias[: -len(".bias")] + ".weight"] = inits[node.input[1]].astype(np.float32).T
    return out


def encoder_config(bundle: Path, manifest: Manifest) -> tuple[Path, dict]:
    """(file, Hugging Face config) of an encoder bundle's architecture, from the run folder
    that trained it: `student/config.json`, or `pruned/config.json` for a pruned student
    (the manifest's lineage names the folder)."""
    folder = (manifest.lineage or {}).get("model_folder", "student")
    config_file = bundle.parent / folder / "config.json"
    if not config_file.is_file():
        raise NanoforgeError(f"{config_file}: missing; an encoder exports from the run folder that trained it "
                             f"(its {folder}/config.json gives the architecture)")
    return config_file, json.loads(config_file.read_text())


def unprune_heads(weights: dict[str, np.ndarray], config: dict) -> tuple[dict[str, np.ndarray], dict]:
    """A head-pruned BERT (config `pruned_heads`) as a full-width one for engines that want
    hidden_size / num_attention_heads per head (llama.cpp's bert, the MLX runtime): each pruned
    head comes back with zero query/key/value weights and zero output columns. Such a head
    attends uniformly to zero values and writes nothing, so the answers are the same."""
    pruned = {int(k): set(v) for k, v in (config.get("pruned_heads") or {}).items() if v}
    if not pruned:
        return weights, config
    n, hidden = int(config["num_attention_heads"]), int(config["hidden_size"])
    d = hidden // n
    out = dict(weights)
    for layer, gone in pruned.items():
        kept = [h for h in range(n) if h not in gone]
        rows = np.concatenate([np.arange(h * d, (h + 1) * d) for h in kept])
        p = f"encoder.encoder.layer.{layer}.attention."
        for m in ("self.query", "self.key", "self.value"):
            w = np.zeros((hidden, weights[f"{p}{m}.weight"].shape[1]), np.float32)
            w[rows] = weights[f"{p}{m}.weight"]
            b = np.zeros(hidden, np.float32)
            b[rows] = weights[f"{p}{m}.bias"]
            out[f"{p}{m}.weight"], out[f"{p}{m}.bias"] = w, b
        o = np.zeros((weights[f"{p}output.dense.weight"].shape[0], hidden), np.float32)
        o[:, rows] = weights[f"{p}output.dense.weight"]
        out[f"{p}output.dense.weight"] = o
    return out, {k: v for k, v in config.items() if k != "pruned_heads"}


def torch_model(bundle: Path, manifest: Manifest, onnx_file: Path):
    """The bundle's model as the torch student it was exported from (eval mode), its weights
    read from `onnx_file`. An encoder needs its architecture from the run folder
    (`student/config.json` beside the bundle)."""
    import torch

    s = manifest.model
    if s.runtime == "decoder":
        from nanoforge.students.causal import CausalConfig, CausalLM

        model = CausalLM(CausalConfig(**s.config))
        state = decoder_weights(onnx_file)
    else:
        from transformers import AutoConfig, AutoModel

        from nanoforge.students.encoder import EncoderClassifier, EncoderTagger

        raw = encoder_config(bundle, manifest)[1]
        raw["pruned_heads"] = {int(k): v for k, v in (raw.get("pruned_heads") or {}).items()}  # JSON keys are text
        config = AutoConfig.for_model(**raw)
        kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        cls, n = ((EncoderClassifier, len(s.labels)) if s.runtime == "encoder-classifier"
                  else (EncoderTagger, len(s.tags)))
        model = cls(AutoModel.from_config(config, **kwargs), n)
        state = encoder_weights(onnx_file)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not (k == "lm_head.weight" and model.cfg.tie_embeddings)]
    if missing:
        raise NanoforgeError(f"{onnx_file}: weights missing for {', '.join(missing[:3])}"
                             + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(state[k])) for k in own if k in state},
                          strict=False)
    return model.eval()
