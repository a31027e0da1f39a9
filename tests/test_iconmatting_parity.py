"""IconMatting golden parity against the official code's recorded outputs (skipped without the golden data)."""

from __future__ import annotations

import os
from pathlib import Path

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
    def mean_forward(self, roi_tokens, target):
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
    # The SDPA path meets every tolerance except, marginally, the 48² column sums (see README).
    rep = parity.features_parity(FE_DIR, numerics="fast")
    assert all(v <= rep.tols[k] for k, v in rep.diffs.items() if k != "attn_48_colsum"), rep.lines()
    assert rep.diffs["attn_48_colsum"] <= 2.5e-4, rep.lines()


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parity.main(["decoder", str(tmp_path / "missing")]) == 2
    assert "ERROR" in capsys.readouterr().out.strip().splitlines()[-1]
