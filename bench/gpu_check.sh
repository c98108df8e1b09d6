#!/usr/bin/env bash
# GPU check, in one go, on a machine with a CUDA build of torch and nanoforge installed (the
# project never depends on it). Prints and writes bench/results/gpu_check.json:
#   - the device `student.device: auto` picks;
#   - one epoch of the CLINC150 nano (MiniLM-L6, the demo's spec) on CUDA in bf16, and the same
#     run's first 200 steps on the CPU (per-epoch time extrapolated from them);
#   - one epoch of the SmolLM2-135M DialogSum decoder (`make smollm2` first) on CUDA in bf16,
#     and its first 20 CPU steps.
#   bash bench/gpu_check.sh [OUT_DIR]          (about 10 minutes on one H100)
set -euo pipefail
OUT=${1:-runs/gpu-check}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
$PY - "$OUT" <<'PYEOF'
import json, subprocess, sys, time
from pathlib import Path

import torch
import yaml

out = Path(sys.argv[1])
root = Path.cwd()
from nanoforge.distill.parallel import device_of

result = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
          "auto_device": str(device_of("auto")), "runs": []}
print(json.dumps(result), flush=True)


def run(name, spec_path, student, data_dir):
    spec = yaml.safe_load(Path(spec_path).read_text())
    spec["student"] = {**spec.get("student", {}), **student}
    spec["data"] = {k: str((data_dir / v).resolve()) if k in ("train", "valid", "test") else v
                    for k, v in spec["data"].items()}
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nanoforge", "train", str(folder / "task.yaml"), "--out", str(folder / "run")],
                   check=True)
    training = json.loads((folder / "run" / "report.json").read_text())["training"]
    row = {"run": name, **{k: training.get(k) for k in ("device", "steps", "seconds", "best_valid_score")},
           "command_seconds": round(time.perf_counter() - t0, 1)}
    result["runs"].append(row)
    print(json.dumps(row), flush=True)


clinc = root / "examples" / "clinc150"
run("clinc150-cuda-bf16", clinc / "task.yaml", {"device": "cuda", "precision": "bf16", "epochs": 1}, clinc)
run("clinc150-cpu-200-steps", clinc / "task.yaml", {"device": "cpu", "epochs": 1, "max_steps": 200}, clinc)
sys.path.insert(0, str(root / "bench"))
import dialogsum as ds  # noqa: E402

if (ds.DATA / "train.jsonl").is_file():
    data = out / "dialogsum-data"
    data.mkdir(parents=True, exist_ok=True)
    ds.write_splits(data)
    (data / "task.yaml").write_text(ds.SPEC.format(max_length=512, epochs=1, lr=1e-4))
    run("smollm2-cuda-bf16", data / "task.yaml", {"device": "cuda", "precision": "bf16", "grad_checkpointing": True,
                                                   "threads": None}, data)
    run("smollm2-cpu-20-steps", data / "task.yaml", {"device": "cpu", "max_steps": 20}, data)
else:
    print(f"{ds.DATA}: no DialogSum data here; the decoder runs are skipped")
dest = root / "bench" / "results" / "gpu_check.json"
dest.write_text(json.dumps(result, indent=2) + "\n")
print(f"wrote {dest}")
PYEOF
