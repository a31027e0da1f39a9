"""IconMatting golden parity against the official code's recorded outputs (skipped without the golden data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED

torch = pytest.importorskip("torch")

from methods.iconmatting import parity  # noqa: E402
from methods.iconmatting.decoder import InterSimilarity  # noqa: E402
from methods.iconmatting.golden import load_decoder_case  # noqa: E402

GOLDEN = Path(os.environ.get("ICMBENCH_ICONMATTING_GOLDEN", SHARED / "golden" / "iconmatting"))
CASES = sorted(p for p in GOLDEN.glob("decoder_case_*") if (p / "manifest.json").is_file())
FE_DIR = GOLDEN / "feature_extractor"
needs_golden = pytest.mark.skipif(not CASES, reason="golden data not available")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@needs_golden
@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[p.name for p in CASES])
def test_decoder_parity(case: Path) -> None:
    rep = parity.decoder_parity(case)
    assert rep.ok, rep.lines()
    assert rep.diffs["alpha"] <= 1e-5 and rep.diffs["inter_similarity"] <= 1e-5
    k = load_decoder_case(case, verify=False).manifest["roi_token_count_K"]
    assert rep.notes["K"].startswith(f"{k} ")


@needs_golden
@pytest.mark.slow
def test_decoder_parity_detects_a_mistake(monkeypatch: pytest.MonkeyPatch) -> None:
    # mean instead of sum over the K RoI tokens (a plausible misreading) must fail the check
    def mean_forward(self, roi_tokens, target, token_weights=None):
        b, _, h, w = target.shape
        return self.token_probs(roi_tokens, target).mean(dim=1).reshape(b, 1, h, w)

    monkeypatch.setattr(InterSimilarity, "forward", mean_forward)
    rep = parity.decoder_parity(CASES[0])
    assert not rep.ok
    assert rep.diffs["inter_similarity"] > 1e-2


@needs_golden
def test_regeneration_is_checked(tmp_path: Path) -> None:
    import json
    import shutil

    case = tmp_path / "golden" / "decoder_case_X"
    case.mkdir(parents=True)
    shutil.copy(GOLDEN / "decoder_keys.tsv", tmp_path / "golden")
    man = json.loads((CASES[0] / "manifest.json").read_text())
    man["generation"]["inputs"]["seed"] += 1  # checksums no longer match the seed
    (case / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(ValueError, match="does not match its manifest"):
        load_decoder_case(case)


@pytest.mark.slow
@pytest.mark.skipif(not (FE_DIR / "manifest.json").is_file(), reason="golden data not available")
def test_features_parity_official_numerics() -> None:
    rep = parity.features_parity(FE_DIR, numerics="official")
    assert rep.ok, rep.lines()


@pytest.mark.slow
@pytest.mark.skipif(not (FE_DIR / "manifest.json").is_file(), reason="golden data not available")
def test_features_parity_fast_path() -> None:
    # The SDPA path meets the same tolerances, column sums under the golden README's relative rule.
    rep = parity.features_parity(FE_DIR, numerics="fast")
    assert rep.ok, rep.lines()


def test_relative_tolerance_scales_with_the_golden_value() -> None:
    golden = np.array([0.05, 13.2])
    rep = parity.ParityReport()
    # 1.2e-3 on a column of 13.2 is within 1e-5 + 1e-4·13.2 = 1.33e-3
    rep.compare("big", golden + np.array([0.0, 1.2e-3]), golden, parity.COLSUM_ATOL, parity.COLSUM_RTOL)
    assert rep.ok, rep.lines()
    # 2e-5 on a column of 0.05 exceeds 1e-5 + 5e-6: the same absolute size fails where the value is small
    rep.compare("small", golden + np.array([2e-5, 0.0]), golden, parity.COLSUM_ATOL, parity.COLSUM_RTOL)
    assert not rep.ok and "small" in rep.failures[0]
    rep.compare("nan", golden + np.array([np.nan, 0.0]), golden, 1.0, 1.0)
    assert any("nan" in f for f in rep.failures)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parity.main(["decoder", str(tmp_path / "missing")]) == 2
    assert "ERROR" in capsys.readouterr().out.strip().splitlines()[-1]
