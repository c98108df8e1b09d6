"""SROIE receipts: extraction nano (span tagger on MiniLM-L6) with the reference teacher.

    python bench/sroie.py --out runs/sroie           # train + evaluate (~25 min here)
    python bench/sroie.py --out runs/sroie --eval-only
    python bench/sroie.py --out runs/sroie-l3 --layers 3   # pruned to 3 of 6 layers
    python bench/sroie.py --out runs/sroie-decoder --decoder --epochs 20   # generative, constrained JSON
    python bench/sroie.py --out runs/sroie-l3kd --layers 3 --distil-from runs/sroie/student
                                                     # the trained 6-layer tagger pruned to 3, distilled
    python bench/sroie.py --out runs/sroie-minimal --minimal --measure-all
                                                     # the spec a new user writes: `student: {base: minilm-l6}`
    python bench/sroie.py --out runs/sroie-plain --minimal --plain
                                                     # SROIE's own rule: every field a plain string

Reads ../shared/data/sroie/train.jsonl (research-use licence: read in place, never
copied into the repository), makes a seeded 80/10/10 split of it into
OUT/data-split/{train,valid,test}.jsonl, trains with `nanoforge train`, then measures
on the held-out test split: field F1 per field and micro, exact match, valid JSON, and
p50 latency per receipt of the shipped bundle on one thread vs the torch FP32 student in
the same process. Writes bench/results/sroie.json and bench/results/sroie.png.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SROIE = HERE.parent.parent / "shared" / "data" / "sroie" / "train.jsonl"

SPEC = """name: receipts
version: 1.0.0
kind: extract
description: Pull the company, date, address and total out of a scanned receipt's OCR text.
schema:
  type: object
  properties:
    company: {type: [string, "null"]}
    date: {type: [string, "null"], format: date}
    address: {type: [string, "null"]}
    total: {type: [number, "null"]}
data: {train: train.jsonl, valid: valid.jsonl, test: test.jsonl}
teacher: {backend: reference}
student: {base: minilm-l6, max_length: 512, stride: 128, epochs: EPOCHS, batch_size: 8, lr: 1.0e-4, patience: 3EXTRA}
"""


DECODER_STUDENT = """student: {kind: causal, base: scratch, scratch: {hidden_size: 256, layers: 4, heads: 4, vocab_size: 4000},
  max_length: 640, max_new_tokens: 96, epochs: EPOCHS, batch_size: 8, lr: 1.0e-3, patience: 3}
"""


def split(src: Path, dst: Path, seed: int = 0) -> None:
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    n = len(rows)
    parts = {"test": rows[: n // 10], "valid": rows[n // 10 : n // 5], "train": rows[n // 5 :]}
    dst.mkdir(parents=True, exist_ok=True)
    for name, part in parts.items():
        (dst / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/sroie"))
    ap.add_argument("--data", type=Path, default=SROIE)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--layers", type=int, default=None, help="keep this many of MiniLM's 6 layers (pruning)")
    ap.add_argument("--distil-from", type=Path, default=None,
                    help="a trained tagger (RUN/student) to prune to --layers and distil from")
    ap.add_argument("--measure-all", action="store_true",
                    help="score every rung of the quantisation ladder on valid (the first passing still ships)")
    ap.add_argument("--minimal", action="store_true",
                    help="the spec a new user writes (student: {base: minilm-l6}); every other setting is nanoforge's default")
    ap.add_argument("--plain", action="store_true",
                    help="SROIE's own rule: every field a plain string (whitespace-normalised exact match, "
                         "no typed date or amount comparison)")
    ap.add_argument("--decoder", action="store_true",
                    help="a decoder student from scratch with schema-constrained JSON instead of the span tagger")
    args = ap.parse_args()

    data_dir = args.out / "data-split"
    if not args.eval_only:
        split(args.data, data_dir)
        extra = f", layers: {args.layers}" if args.layers else ""
        if args.distil_from:
            extra += f", distil_from: {args.distil_from.resolve()}"
        spec = SPEC.replace("EPOCHS", str(args.epochs)).replace("EXTRA", extra)
        if args.minimal:
            spec = spec[: spec.index("student:")] + "student: {base: minilm-l6}\n"
        elif args.decoder:
            spec = spec[: spec.index("student:")] + DECODER_STUDENT.replace("EPOCHS", str(args.epochs))
        if args.plain:
            spec = spec.replace(', format: date}', '}').replace('total: {type: [number, "null"]}',
                                                                'total: {type: [string, "null"]}')
        if args.measure_all:
            spec += "export: {measure_all: true}\n"
        (data_dir / "task.yaml").write_text(spec)
        from nanoforge.recipes import train
        from nanoforge.task import load_task

        train(load_task(data_dir / "task.yaml"), args.out, spec_source=str(data_dir / "task.yaml"))

    import torch

    from nanoforge.data import read_records
    from nanoforge.evaluate import evaluate_bundle, latency_ms, size_mb
    from nanoforge.runtime import load
    from nanoforge.runtime.tagging import DocumentEncoder, read_fields
    from nanoforge.runtime.text import TextEncoder
    from nanoforge.students.encoder import EncoderStudent
    from nanoforge.students.runner import TorchRunner

    records = read_records(data_dir / "test.jsonl")
    report = json.loads((args.out / "report.json").read_text())
    export = report["export"]
    quality = evaluate_bundle(args.out / "bundle", records, threads=1, latency_n=args.queries)
    if args.decoder:
        result = {"dataset": "shared/data/sroie/train.jsonl (seeded 80/10/10 split; test held out)",
                  "student": "decoder from scratch, schema-constrained JSON", "n_test": len(records),
                  "metrics": quality["metrics"], "latency_ms_1_thread": {"runtime": quality["latency_ms"]},
                  "size_mb": {"bundle": quality["size_mb"]}, "training": report["training"],
                  "by_export": {k: v["metrics"] for k, v in report["models"].items()}, "date": time.strftime("%Y-%m-%d")}
        out = HERE / "results" / "sroie-decoder.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        m = quality["metrics"]
        print(f"decoder: field F1 {m['field_f1']:.4f}, valid JSON {m['valid_json']:.4f}, "
              f"p50 {quality['latency_ms']['p50']:.1f} ms; wrote {out}")
        return
    texts = [r.input for r in records]
    torch.set_num_threads(1)
    model, meta = EncoderStudent.load(args.out / "student")
    text_enc = TextEncoder.from_file(args.out / "student" / "tokenizer.json", meta["max_length"])
    enc = DocumentEncoder(text_enc.tok, meta["max_length"], meta["stride"], text_enc.pad_id)
    nano = load(args.out / "bundle", threads=1)
    run = TorchRunner(model)
    rt = latency_ms(nano.predict, texts, n=args.queries)
    th = latency_ms(lambda t: read_fields(run, enc, nano.schema, [t], thresholds=nano.thresholds), texts,
                    n=args.queries)
    oracle = span_oracle(nano.schema, records)
    result = {
        "span_oracle_field_f1": oracle,
        "dataset": "shared/data/sroie/train.jsonl (seeded 80/10/10 split; test held out)",
        "n_test": len(records), "metrics": quality["metrics"],
        "latency_ms_1_thread": {"runtime": rt, "torch_fp32": th, "speedup_p50": th["p50"] / rt["p50"]},
        "size_mb": {"bundle": round(size_mb(args.out / "bundle"), 2),
                    "torch_fp32_student": round(size_mb(args.out / "student"), 2)},
        "chars_per_receipt_mean": sum(map(len, texts)) / len(texts),
        "shipped": export["shipped"], "export": export, "spec": (data_dir / "task.yaml").read_text(),
        "defaults_chosen": report.get("defaults"),
        "date": time.strftime("%Y-%m-%d"),
    }
    name = "sroie" + (f"-l{args.layers}" if args.layers else "") + ("-kd" if args.distil_from else "") + \
        ("-minimal" if args.minimal else "") + ("-plain" if args.plain else "")
    out = HERE / "results" / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    m = quality["metrics"]
    print(f"test receipts {len(records)}: field F1 {m['field_f1']:.4f}, exact match {m['exact_match']:.4f}, "
          f"valid JSON {m['valid_json']:.4f}")
    for name, f in m["per_field"].items():  # None: nothing predicted (or expected) for the field
        p, r, f1 = (f"{x:.4f}" if x is not None else "-" for x in (f["precision"], f["recall"], f["f1"]))
        print(f"  {name:8s} P {p} R {r} F1 {f1} (n={f['support']})")
    print(f"span oracle (ceiling of any span extractor on this text): field F1 {oracle:.4f}")
    print(f"p50 per receipt, 1 thread: runtime {rt['p50']:.2f} ms, torch FP32 {th['p50']:.2f} ms")
    for t in export["tried"]:
        print(f"  ladder {t['name']:20s} {t['size_mb']:7.1f} MB  p50 {t['p50_ms']:7.2f} ms  valid F1 {t['metric']:6.2f}  "
              f"agreement {t['agreement']:.2%}  {'pass' if t['passed'] else 'fail'}")
    print(f"shipped: {export['shipped']}; wrote {out}")


def span_oracle(schema, records) -> float:
    """Field F1 of a perfect span tagger: each gold value replaced by the text of its
    aligned span, read as its type. Where OCR text and gold differ (gold is typed from the
    image), no span extractor can be right; this is the ceiling."""
    from nanoforge.extract.align import align_record
    from nanoforge.extract.values import coerce_output, normalise_value
    from nanoforge.metrics.fields import extraction_metrics

    preds, golds = [], []
    for r in records:
        gold = coerce_output(schema, r.output)
        spans, _ = align_record(r.input, gold, schema)
        preds.append({f.name: None if spans.get(f.name) is None else
                      normalise_value(f, r.input[spans[f.name].start:spans[f.name].end]) for f in schema.fields})
        golds.append(gold)
    return extraction_metrics(schema, preds, golds)["field_f1"]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = result["metrics"]["per_field"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.bar(list(per), [per[k]["f1"] or 0 for k in per])
    a1.set_ylim(0, 1.05)
    a1.set_title(f"SROIE test field F1 (shipped bundle): micro {result['metrics']['field_f1']:.3f}")
    lat = result["latency_ms_1_thread"]
    a2.bar(["torch FP32", "nano"], [lat["torch_fp32"]["p50"], lat["runtime"]["p50"]])
    a2.set_ylabel("p50 ms per receipt, 1 thread")
    a2.set_title("latency per receipt")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
