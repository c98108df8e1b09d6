"""Write this folder's JSONL from ../clinc150: each intent replaced by its domain (domains.json).

    python examples/clinc150-domains/build.py

The same utterances and splits as the demo's data; out-of-scope rows stay `"output": null`.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "clinc150"


def main() -> None:
    domains = json.loads((SOURCE / "domains.json").read_text())
    domain_of = {intent: domain for domain, intents in domains.items() for intent in intents}
    for split in ("train", "valid", "test"):
        rows = [json.loads(line) for line in (SOURCE / f"{split}.jsonl").read_text().splitlines() if line.strip()]
        with (HERE / f"{split}.jsonl").open("w") as f:
            for row in rows:
                label = row["output"]
                f.write(json.dumps({"input": row["input"], "output": None if label is None else domain_of[label]}) + "\n")
        print(f"{split}: {len(rows)} rows")


if __name__ == "__main__":
    main()
