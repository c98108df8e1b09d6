"""Task specs: what a nano does, where its data lives, who teaches it.

A spec is YAML validated with pydantic. Errors name the file and the key:

    name: bank-intents
    kind: classify
    labels: [balance, transfer]          # optional: taken from the training data when absent
    data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}
    teacher: {backend: reference}        # or openai: {model, base_url, api_key_env, ...}
    student: {base: minilm-l6}           # or a local Hugging Face model folder
    out_of_scope: {target_retention: 0.95}  # the gate; without it and without out-of-scope rows: none

Paths are relative to the YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nanoforge.errors import NanoforgeError

TaskKind = Literal["classify", "extract", "translate", "summarize"]
GENERATIVE = ("translate", "summarize")
# ISO 639-1 codes a translate spec may name (the student's tokenizer is trained on the data,
# so any script works; the list catches typos such as `jp` for Japanese).
LANGUAGES = {
    "ar": "Arabic", "bg": "Bulgarian", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fa": "Persian", "fi": "Finnish", "fr": "French", "he": "Hebrew",
    "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese",
    "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "ms": "Malay", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sk": "Slovak", "sl": "Slovenian",
    "sv": "Swedish", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "vi": "Vietnamese", "zh": "Chinese",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DataSpec(_Strict):
    train: Path
    valid: Path | None = None
    test: Path | None = None
    valid_fraction: float = Field(0.1, gt=0, lt=0.5)  # of `train`, held out when valid is absent (seeded, stratified)
    test_fraction: float = Field(0.1, gt=0, lt=0.5)  # the same for test
    # Keys of a row's input and output (e.g. `en` / `ja`: one file serves both directions).
    input_field: str = "input"
    output_field: str = "output"
    max_train_rows: int | None = Field(None, ge=1)  # use the first N training rows only


class TeacherSpec(_Strict):
    backend: Literal["reference", "openai", "anthropic", "hf"] = "reference"  # hf: a local causal LM folder (model:)
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    price_per_1m_in: float = Field(0.0, ge=0)
    price_per_1m_out: float = Field(0.0, ge=0)
    concurrency: int = Field(8, ge=1, le=256)
    max_retries: int = Field(4, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0)
    temperature: float = Field(0.0, ge=0, le=2)
    logprobs: bool = False  # ask for top logprobs to build soft labels (when the server has them)
    instructions: str | None = None  # extra task description for the teacher prompt
    cache: Path | None = None  # sqlite file; default: <out>/teacher_cache.sqlite
    # At most this many teacher answers for train + valid. When the pool is larger, a random
    # share of valid and a seed set of train are labelled, then each next batch of train is the
    # one the student is least sure of, spread out (recipes/budget.py); `random` picks at once.
    budget: int | None = Field(None, ge=10)
    selection: Literal["active", "random"] = "active"
    rounds: int = Field(4, ge=1, le=50)  # labelling rounds of an active budget (seed set included)

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _anthropic_key(self):
        if self.backend == "anthropic" and "api_key_env" not in self.model_fields_set:
            self.api_key_env = "ANTHROPIC_API_KEY"
        return self


class ScratchSpec(_Strict):
    """Size of a decoder trained from scratch (student.kind causal, base scratch)."""

    hidden_size: int = Field(256, ge=16, le=4096)
    layers: int = Field(4, ge=1, le=64)
    heads: int = Field(4, ge=1, le=64)
    kv_heads: int | None = Field(None, ge=1, le=64)
    intermediate_size: int | None = Field(None, ge=16)  # default: about 8/3 of hidden_size
    vocab_size: int = Field(8000, ge=300, le=200_000)  # of the tokenizer trained on the task data


class LoraSpec(_Strict):
    r: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


UNPRINTED_DEFAULTS = {"device": "auto", "precision": "fp32", "grad_accum": 1, "grad_checkpointing": False, "cooldown": 0}


class StudentSpec(_Strict):
    # encoder: classifier / span tagger; causal: a decoder LM (default: causal for translate/summarize, else encoder)
    kind: Literal["encoder", "causal"] | None = None
    # a packaged base (encoder: minilm-l6; causal: scratch, smollm2-135m) or a local HF folder
    base: str = "minilm-l6"
    max_length: int = Field(64, ge=8, le=4096)
    stride: int = Field(64, ge=0)  # extract: tokens shared by neighbouring windows of a long document
    layers: int | None = Field(None, ge=1)  # keep this many of the base's layers, evenly spaced (pruning)
    # extract: a trained tagger (a run's student/ folder) to start from, pruned to `layers`,
    # whose token probabilities are soft targets (logit distillation, kd_temperature / kd_alpha)
    distil_from: str | None = None
    epochs: int = Field(6, ge=1, le=100)
    batch_size: int = Field(32, ge=1, le=4096)
    lr: float = Field(1e-4, gt=0, lt=1)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.06, ge=0, lt=1)
    patience: int = Field(2, ge=1)
    cooldown: float = Field(0.0, ge=0, le=10)  # epochs of lr decay to 0 after an early stop: trainer.cool_down
    kd_temperature: float = Field(2.0, gt=0)
    kd_alpha: float = Field(0.5, ge=0, le=1)  # weight of the KL term when soft labels exist
    max_steps: int | None = Field(None, ge=1)  # cap on optimiser steps (tests, smoke runs)
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    scratch: ScratchSpec = ScratchSpec()
    max_new_tokens: int = Field(128, ge=1, le=4096)  # causal: longest answer generated
    # causal, pretrained base: train LoRA adapters (peft) instead of every weight; merged after
    lora: LoraSpec | None = None
    # causal, teacher backend hf with the student's tokenizer: token-level KD weight and
    # divergence (0: forward KL; between 0 and 1: generalised JSD as in GKD)
    kd_beta: float = Field(0.0, ge=0, lt=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # where and how it trains: distill/parallel.py
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accum: int = Field(1, ge=1, le=1024)  # micro-batches per optimiser step of batch_size rows
    grad_checkpointing: bool = False  # decoders: recompute each block's activations in backward

    def fingerprint_dict(self) -> dict:  # less placement, and later settings at the value older students had
        return {k: v for k, v in self.model_dump(mode="json").items() if UNPRINTED_DEFAULTS.get(k, ...) != v}


class OutOfScopeSpec(_Strict):
    target_retention: float = Field(0.95, gt=0, le=1)
    method: Literal["auto", "msp", "energy", "mahalanobis"] = "auto"


_RENAMED_EXPORT_KEYS = {
    "min_int8_agreement": "export.min_agreement (the ladder tries every variant against it)",
    "max_int8_f1_drop": "export.max_metric_drop, in points of the metric (0.02 is now 2.0)",
    "precision": "export.require (a precision the bundle must have)",
}


class ExportSpec(_Strict):
    """The quantisation ladder's tolerance (nanoforge/export/ladder.py): the bundle ships the
    smallest variant whose valid metric is at most `max_metric_drop` points (0-100 scale) under
    the trained model's and whose answers agree with it on at least `min_agreement` of valid
    (labels; fields; decoders: greedy outputs). `require` makes a precision mandatory."""

    max_metric_drop: float = Field(0.5, ge=0, le=100)
    min_agreement: float = Field(0.99, ge=0, le=1)
    require: Literal["fp32", "fp16", "int8", "int4"] | None = None
    measure_all: bool = False  # score every variant (benchmarks); the first passing one still ships

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, raw):
        for old, new in _RENAMED_EXPORT_KEYS.items():
            if isinstance(raw, dict) and old in raw:
                raise ValueError(f"`{old}` was replaced by {new}")
        return raw


class PruneSpec(_Strict):
    """Width pruning with recovery (nanoforge/compress/prune.py): heads and FFN channels scored
    on training batches, the same number kept in every layer, then logit distillation from the
    unpruned student. Either a measured speed target or explicit sizes."""

    # single-input speed-up over the unpruned model, measured on valid inputs (an encoder's INT8
    # ONNX model; a decoder's FP32 ONNX prefill and max_new_tokens greedy steps): the shape that
    # keeps the most weights and reaches it is chosen; a decoder's heads go by key/value group
    target_speedup: float | None = Field(None, gt=1, le=20)
    layers: int | None = Field(None, ge=1)  # explicit sizes (default: the model's own)
    heads: int | None = Field(None, ge=1)
    ffn: int | None = Field(None, ge=1)
    min_layers: int | None = Field(None, ge=1)  # the speed target's shallowest shape (default: half)
    batches: int = Field(64, ge=1, le=100_000)  # training batches that score importance
    epochs: int | None = Field(None, ge=1, le=100)  # of recovery (default: student.epochs)
    lr: float | None = Field(None, gt=0, lt=1)  # of recovery (default: student.lr)
    kd_alpha: float = Field(0.9, ge=0, le=1)  # weight of the unpruned model's soft labels
    # weight of layer distillation (encoders): each kept layer's hidden states learn the unpruned
    # layer's (mean squared error relative to that layer's mean square); 0: the logits only
    hidden_weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _one_target(self):
        if (self.target_speedup is None) == all(v is None for v in (self.layers, self.heads, self.ffn)):
            raise ValueError("give either target_speedup or sizes (layers / heads / ffn), not both or neither")
        return self


class MergeSpec(_Strict):
    """Merge this run's student with students fine-tuned from the same base in other runs
    (nanoforge/compress/merge.py); the merge replaces the student only when valid improves."""

    runs: list[str] = Field(min_length=1)  # run folders (with student/) or student folders
    method: Literal["greedy", "uniform", "slerp", "ties"] = "greedy"
    t: float = Field(0.5, ge=0, le=1)  # slerp: 0 is this run's student, 1 the other one
    density: float = Field(0.2, gt=0, le=1)  # ties: share of each task vector kept


class PreferenceSpec(_Strict):
    """Preference rounds from AI feedback (nanoforge/distill/preference.py): judged samples of the student make
    best/worst pairs for DPO (+ `nll` x the chosen answer's NLL: RPO); a round is kept only if valid improves."""

    judge: Literal["reference-metric", "teacher", "roundtrip"] = "reference-metric"
    rounds: int = Field(3, ge=1, le=20)
    candidates: int = Field(4, ge=2, le=32)
    prompts: int = Field(1000, ge=1)  # training inputs sampled per round
    pairs_per_prompt: int = Field(1, ge=1, le=16)
    temperature: float = Field(1.0, gt=0, le=2)  # of the sampling
    top_p: float = Field(0.95, gt=0, le=1)
    beta: float = Field(0.1, gt=0)  # DPO's
    length_normalised: bool = False  # mean instead of summed answer log-probabilities
    greedy: bool = False  # the student's greedy answer joins each prompt's candidates
    rejected: Literal["worst", "greedy"] = "worst"  # each pair's rejected side; greedy: that answer (implies greedy)
    reference: bool = False  # the teacher's answer joins them too (chosen when the judge ranks it first: SPIN)
    nll: float = Field(0.0, ge=0)
    min_margin: float = Field(0.0, ge=0)  # pairs the judge separates by less (its points: chrF, F1 x 100) are left out
    epochs: int = Field(1, ge=1, le=20)  # over each round's pairs
    lr: float | None = Field(None, gt=0, lt=1)  # default: student.lr / 10
    reverse: str | None = None  # roundtrip: the reverse-direction nano (a bundle folder)


class OptimiseSpec(_Strict):
    """Steps after distillation (nanoforge/recipes/optimise.py), in this order; each is reported."""

    preference: PreferenceSpec | None = None
    merge: MergeSpec | None = None
    prune: PruneSpec | None = None


class FallbackSpec(_Strict):
    """What serving does when the nano should not answer alone: the input is out of scope,
    the output breaks the contract (a label outside the set, JSON invalid for the schema),
    or the confidence is below `min_confidence`.

    teacher: ask `teacher` (default: the task's teacher) and mark the answer as the teacher's;
    refuse:  a structured refusal with the reason;  flag: the nano's answer, flagged."""

    policy: Literal["teacher", "refuse", "flag"] = "refuse"
    min_confidence: float | None = Field(None, ge=0, le=1)
    teacher: TeacherSpec | None = None


class DatagenSpec(_Strict):
    """`nanoforge datagen` (nanoforge/datagen/): inputs the teacher writes from `description:`.

    Each request for inputs picks one value of every axis; axes given here are used as they
    are, and the teacher proposes values for the standard ones left out (topic, persona,
    style, length). The thresholds decide what counts as the same input again."""

    axes: dict[str, list[str]] = {}  # e.g. {persona: [student, retiree], style: [terse, chatty]}
    per_call: int = Field(5, ge=1, le=50)  # inputs asked for in one request
    temperature: float = Field(1.0, ge=0, le=2)  # of the writing requests (grading and labels: teacher's)
    seed_examples: int = Field(5, ge=0, le=50)  # first rows of data.train shown as examples
    edge_share: float = Field(0.2, ge=0, le=1)  # requests for inputs near the task's boundary
    out_of_scope_share: float = Field(0.1, ge=0, le=1)  # requests for inputs outside the task (with out_of_scope:)
    min_judge_score: int = Field(3, ge=1, le=5)  # the judge's 1-5 score an input must reach
    max_chars: int | None = Field(None, ge=10)  # longer is garbage; default: from the seeds, else the kind
    near_duplicate: float = Field(0.6, gt=0, le=1)  # Jaccard of word 1-/2-grams at or above: the same input
    max_cosine: float = Field(0.95, gt=0, le=1)  # embedding cosine at or above: the same input

    @field_validator("axes")
    @classmethod
    def _axes_have_values(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, values in v.items():
            if not name.strip() or not values or any(not x.strip() for x in values):
                raise ValueError(f"axis {name!r}: give a name and a list of non-empty values")
        return v

    @model_validator(mode="after")
    def _shares(self):
        if self.edge_share + self.out_of_scope_share > 1:
            raise ValueError("edge_share + out_of_scope_share must be at most 1")
        return self


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    version: str = Field("0.1.0", pattern=r"^\d+\.\d+\.\d+$")
    kind: TaskKind = "classify"
    description: str | None = None
    labels: list[str] | None = None
    source_lang: str | None = None  # translate: ISO 639-1 code of the input
    target_lang: str | None = None  # translate: ISO 639-1 code of the output
    max_summary_words: int | None = Field(None, ge=1)  # summarize: a length limit the teacher is told
    # kind: extract — a JSON Schema object of flat fields (see nanoforge/extract/schema.py)
    schema_: dict | None = Field(None, alias="schema")
    data: DataSpec
    teacher: TeacherSpec = TeacherSpec()
    student: StudentSpec = StudentSpec()
    # classify: the out-of-scope gate. Left out, a gate is still fitted (with these defaults)
    # when the data has out-of-scope rows; otherwise the label set is closed: no gate.
    out_of_scope: OutOfScopeSpec | None = None
    export: ExportSpec = ExportSpec()
    fallback: FallbackSpec = FallbackSpec()
    datagen: DatagenSpec = DatagenSpec()
    optimise: OptimiseSpec = OptimiseSpec()
    seed: int = 0

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one label (or be left out)")
        if any(not isinstance(x, str) or not x.strip() for x in v):
            raise ValueError("every label must be a non-empty string")
        dup = sorted({x for x in v if v.count(x) > 1})
        if dup:
            raise ValueError(f"duplicate labels: {', '.join(dup)}")
        return v

    def public_dict(self) -> dict:
        """The spec as JSON for bundles and reports (paths as given, no secrets)."""
        return self.model_dump(mode="json", by_alias=True)

    def extraction_schema(self):
        """The parsed output schema of an `extract` task (nanoforge.extract.Schema)."""
        from nanoforge.extract.schema import Schema

        return Schema.from_json_schema(self.schema_ or {}, source="schema")


def _loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_task(raw: object, source: str = "<spec>", base_dir: Path | None = None) -> TaskSpec:
    """Validate a parsed YAML/JSON object; resolve data paths against `base_dir`."""
    if not isinstance(raw, dict):
        raise NanoforgeError(f"{source}: a task spec must be a mapping of keys, got {type(raw).__name__}")
    try:
        spec = TaskSpec.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise NanoforgeError(f"{source}: {_loc(err['loc'])}: {msg}{more}") from None
    if base_dir is not None:
        d = spec.data
        for key in ("train", "valid", "test"):
            p = getattr(d, key)
            if p is not None and not p.is_absolute():
                setattr(d, key, (base_dir / p).resolve())
        base = Path(spec.student.base).expanduser()
        if not base.is_absolute() and (base_dir / base).exists():
            spec.student.base = str((base_dir / base).resolve())
        if spec.student.distil_from is not None:
            spec.student.distil_from = str((base_dir / Path(spec.student.distil_from).expanduser()).resolve())
        if spec.optimise.preference is not None and spec.optimise.preference.reverse:
            spec.optimise.preference.reverse = str((base_dir / Path(spec.optimise.preference.reverse).expanduser())
                                                   .resolve())
        if spec.optimise.merge is not None:
            spec.optimise.merge.runs = [str((base_dir / Path(r).expanduser()).resolve()) for r in spec.optimise.merge.runs]
        if spec.teacher.cache is not None and not spec.teacher.cache.is_absolute():
            spec.teacher.cache = (base_dir / spec.teacher.cache).resolve()
    if spec.kind == "extract":
        if not spec.schema_:
            raise NanoforgeError(f"{source}: schema: required for kind extract (a JSON Schema object of fields)")
        try:
            spec.extraction_schema()
        except NanoforgeError as e:
            raise NanoforgeError(f"{source}: {e}") from None
    elif spec.schema_ is not None:
        raise NanoforgeError(f"{source}: schema: only used by kind extract")
    elif spec.student.distil_from is not None:
        raise NanoforgeError(f"{source}: student.distil_from: only used by kind extract")
    if spec.student.kind is None:
        spec.student.kind = "causal" if spec.kind in GENERATIVE else "encoder"
    if spec.student.kind == "causal" and "base" not in spec.student.model_fields_set:
        spec.student.base = "scratch"
    if spec.kind in GENERATIVE and spec.student.kind != "causal":
        raise NanoforgeError(f"{source}: student.kind: kind {spec.kind} needs a causal (decoder) student")
    if spec.student.kind == "causal" and spec.kind == "classify":
        raise NanoforgeError(f"{source}: student.kind: causal students do translate, summarize or extract")
    if spec.kind == "translate":
        for key in ("source_lang", "target_lang"):
            code = getattr(spec, key)
            if code is None:
                raise NanoforgeError(f"{source}: {key}: required for kind translate (an ISO 639-1 code such as en)")
            if code not in LANGUAGES:
                raise NanoforgeError(f"{source}: {key}: unknown language code {code!r} "
                                     f"(use an ISO 639-1 code: {', '.join(sorted(LANGUAGES))})")
        if spec.source_lang == spec.target_lang:
            raise NanoforgeError(f"{source}: target_lang: same as source_lang ({spec.source_lang})")
    elif spec.source_lang is not None or spec.target_lang is not None:
        raise NanoforgeError(f"{source}: source_lang/target_lang: only used by kind translate")
    if spec.max_summary_words is not None and spec.kind != "summarize":
        raise NanoforgeError(f"{source}: max_summary_words: only used by kind summarize")
    if spec.teacher.budget is not None and (spec.kind not in ("classify", "extract") or spec.student.kind != "encoder"):
        raise NanoforgeError(f"{source}: teacher.budget: labelling on a budget is built for encoder students "
                             f"(classify, extract); label a sample with data.max_train_rows instead")
    if spec.optimise.merge is not None and (spec.kind not in ("classify", "extract") or spec.student.kind != "encoder"):
        raise NanoforgeError(f"{source}: optimise.merge: built for encoder students (classify, extract)")
    if spec.optimise.prune is not None and spec.kind not in ("classify", "translate", "summarize"):
        raise NanoforgeError(f"{source}: optimise.prune: built for classify (encoder) and translate / summarize students")
    pref = spec.optimise.preference
    if pref is not None and spec.kind not in ("translate", "summarize"):
        raise NanoforgeError(f"{source}: optimise.preference: built for translate and summarize (decoder) students")
    if pref is not None and pref.judge == "roundtrip" and (spec.kind != "translate" or not pref.reverse):
        raise NanoforgeError(f"{source}: optimise.preference.reverse: the roundtrip judge needs a translate task "
                             "and a reverse-direction nano (a bundle folder)")
    merge = spec.optimise.merge
    if merge is not None and merge.method == "slerp" and len(merge.runs) != 1:
        raise NanoforgeError(f"{source}: optimise.merge.runs: slerp merges this run's student with exactly one other")
    if spec.teacher.backend in ("openai", "hf") and not spec.teacher.model:
        raise NanoforgeError(f"{source}: teacher.model: required for the {spec.teacher.backend} backend")
    fb = spec.fallback.teacher
    if fb is not None and fb.backend == "openai" and not fb.model:
        raise NanoforgeError(f"{source}: fallback.teacher.model: required for the openai backend")
    return spec


def load_task(path: str | Path) -> TaskSpec:
    path = Path(path)
    if not path.is_file():
        raise NanoforgeError(f"{path}: task spec not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise NanoforgeError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise NanoforgeError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    return parse_task(raw, source=str(path), base_dir=path.parent.resolve())
