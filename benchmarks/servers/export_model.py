"""Export the plugin's model for the peers and write what every answer is checked against.

Run in the benchmark's tools environment:

    python export_model.py MODEL_SKOPS OUT_DIR

Writes to OUT_DIR:
  model.joblib   the same fitted LogisticRegression, for MLServer, KServe and the floor
  rows.json      {"small": [1 row], "batch": [1000 rows]}: iris rows, the batch cycling through all 150
  expected.json  {"small": {"FP64": [...], "FP32": [...]}, "batch": {...}}: the model's own
                 predictions for those rows as float64 and as float32 (what a server given FP32 sees)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import skops.io
from sklearn.datasets import load_iris

BATCH_ROWS = 1000


def benchmark_rows() -> dict[str, np.ndarray[Any, Any]]:
    features = load_iris().data
    return {"small": features[:1], "batch": np.resize(features, (BATCH_ROWS, features.shape[1]))}


def expected_predictions(model: Any, rows: np.ndarray[Any, Any]) -> dict[str, list[int]]:
    return {
        "FP64": model.predict(rows.astype(np.float64)).tolist(),
        "FP32": model.predict(rows.astype(np.float32)).tolist(),
    }


def main() -> None:
    skops_path, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
    # The plugin's own loader trusts no extra types; neither does this copy.
    model = skops.io.load(skops_path, trusted=[])
    out_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out_dir / "model.joblib")
    rows = benchmark_rows()
    (out_dir / "rows.json").write_text(json.dumps({name: r.tolist() for name, r in rows.items()}))
    expected = {name: expected_predictions(model, r) for name, r in rows.items()}
    (out_dir / "expected.json").write_text(json.dumps(expected))
    print(f"exported {skops_path.name} to {out_dir / 'model.joblib'}")


if __name__ == "__main__":
    main()
