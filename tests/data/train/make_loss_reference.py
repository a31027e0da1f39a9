"""One-off: run the official ``LossFunction2`` on the seeded cases of ``tests/test_train_parts.py``; store the values.

Not a test and not run by the tests (it needs the official repository). Re-run it only to regenerate
``loss_reference.json``::

    .venv/bin/python tests/data/train/make_loss_reference.py /work/.mirror/tiny-smart+in-context-matting/repo

It extracts ``icm/criterion/loss_function.py`` at the pinned commit into a temporary folder with ``git show``,
imports it as a plain module (it only needs torch and torchvision) and evaluates every case of
``tests.test_train_parts.loss_cases()``: each loss key, the total, and Σ|∂total/∂pred|.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
COMMIT = "d5197e0"
SOURCE = "icm/criterion/loss_function.py"


def official_module(repo: Path):
    """The official loss module, extracted from the bare repository ``repo`` at ``COMMIT``."""
    full = subprocess.run(["git", "-C", str(repo), "rev-parse", COMMIT], check=True, capture_output=True,
                          text=True).stdout.strip()
    text = subprocess.run(["git", "-C", str(repo), "show", f"{full}:{SOURCE}"], check=True, capture_output=True,
                          text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="official-loss-"))
    (folder / "official_loss.py").write_text(text)
    spec = importlib.util.spec_from_file_location("official_loss", folder / "official_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, full


def main(repo: str) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.test_train_parts import loss_cases

    module, full = official_module(Path(repo))
    loss_fn = module.LossFunction2()
    out = {"source": f"tiny-smart/in-context-matting:{SOURCE}@{full}", "torch": torch.__version__, "cases": {}}
    for name, (sample_map, pred, target) in loss_cases().items():
        pred = pred.clone().requires_grad_(True)
        terms = loss_fn(sample_map, pred, target)
        total = sum(terms.values())
        total.backward()
        out["cases"][name] = {
            "terms": {k: float(v.detach()) for k, v in terms.items()},
            "total": float(total.detach()),
            "grad_abs_sum": float(pred.grad.abs().sum()),
            "input_sums": [float(sample_map.sum()), float(pred.detach().double().sum()), float(target.double().sum())],
        }
    path = Path(__file__).with_name("loss_reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1])
