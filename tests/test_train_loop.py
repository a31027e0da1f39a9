"""The IconMatting training loop on the tiny random SD pipeline (CPU): learning, resume, refusal, checkpoints."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from benchmark.run_lock import RunLockedError  # noqa: E402
from methods import build_method  # noqa: E402
from methods.iconmatting.checkpoint import read_state_dict  # noqa: E402
from methods.iconmatting.decoder import DecoderConfig, InContextDecoder  # noqa: E402
from methods.iconmatting.tiny import randomize_decoder_  # noqa: E402
from methods.iconmatting.train.loop import (  # noqa: E402
    BatchedDecoder,
    TrainConfigError,
    Trainer,
    compose_train_config,
)
from methods.iconmatting.train.validate import ValidationSpec, benchmark_config, evaluate  # noqa: E402
from tests.conftest import make_folder_dataset  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic group of 4 images (soft discs over noise)."""
    return make_folder_dataset(tmp_path_factory.mktemp("train") / "data", groups=1, per_group=4, size=(96, 128))


def overrides(tiny_sd: Path, embeds: Path, data: Path, *extra: str, size: int = 64, steps: int = 10) -> list[str]:
    return ["dataset=folder", f"dataset.root={data}", f"sd_path={tiny_sd}", "check_sd21=false",
            f"prompt_embeds_file={embeds}", f"train.steps={steps}", f"train.image_size={size}",
            "train.ensemble_size=1", "train.warmup_steps=2", "train.lr=1e-3", "train.device=cpu",
            "train.progress=off", "train.tensorboard=false", *extra]


def config(tiny_sd: Path, embeds: Path, data: Path, *extra: str, **kw) -> dict:
    return compose_train_config(overrides(tiny_sd, embeds, data, *extra, **kw))


def train_rows(out: Path, drop: tuple[str, ...] = ("steps_per_s", "examples_per_s", "wall_s"),
               kinds: tuple[str, ...] = ("train",)) -> list[dict]:
    with (out / "log.csv").open(newline="") as fh:
        return [{k: v for k, v in r.items() if k not in drop} for r in csv.DictReader(fh) if r["kind"] in kinds]


# --------------------------------------------------------------------------- fast unit checks
def test_batched_decoder_is_the_decoder_forward_with_one_reference_per_item():
    cfg = DecoderConfig.for_input(64, (8, 8))
    decoder = randomize_decoder_(InContextDecoder(cfg), seed=1).eval()
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 64, 64, generator=g) * 2 - 1
    up0, up1 = torch.randn(2, 8, 2, 2, generator=g), torch.randn(2, 8, 4, 4, generator=g)
    attn = tuple(torch.rand(2, r, r, r * r, generator=g).softmax(-1) for r in (2, 4))
    tokens = [torch.randn(3, 8, generator=g), torch.randn(1, 8, generator=g)]
    batched = BatchedDecoder(decoder)(image, up1, (up0, up1), attn, tokens)
    with torch.no_grad():
        single = [decoder(image[i:i + 1], up1[i:i + 1], (up0[i:i + 1], up1[i:i + 1]),
                          tuple(a[i:i + 1] for a in attn), tokens[i]).alpha for i in range(2)]
    torch.testing.assert_close(batched, torch.cat(single), rtol=1e-5, atol=1e-6)
    empty = BatchedDecoder(decoder)(image[:1], up1[:1], (up0[:1], up1[:1]), tuple(a[:1] for a in attn),
                                    [torch.zeros(0, 8)])  # an empty RoI: inter-similarity 0, as the official
    assert torch.isfinite(empty).all()


@pytest.mark.parametrize(("world", "acc"), [(1, 1), (1, 3), (2, 1), (2, 2), (4, 2)])
def test_a_step_covers_its_draws_in_the_same_batchnorm_blocks_on_any_number_of_processes(world, acc):
    bs = 2
    blocks = []
    for rank in range(world):
        fake = SimpleNamespace(settings=SimpleNamespace(batch_size=bs), dist=SimpleNamespace(world=world, rank=rank),
                               effective_batch=bs * acc * world)
        blocks += [tuple(Trainer.indices(fake, 3, m)) for m in range(acc)]  # type: ignore[arg-type]
    e = bs * acc * world
    assert sorted(blocks) == [tuple(range(3 * e + i, 3 * e + i + bs)) for i in range(0, e, bs)]


def test_refusals_and_the_lock_happen_before_any_model_is_loaded(tiny_sd, embeds, group, tmp_path):
    out = tmp_path / "out"
    with Trainer(config(tiny_sd, embeds, group), out) as first:
        assert first.extractor is None and (out / "train.json").is_file()
        with pytest.raises(RunLockedError, match="in use"):
            Trainer(config(tiny_sd, embeds, group), out)
    with pytest.raises(TrainConfigError, match=r"train\.lr: 0\.001 → 0\.002"):
        Trainer(config(tiny_sd, embeds, group, "train.lr=2e-3"), out)
    with pytest.raises(TrainConfigError, match="effective_batch: 2 → 4"):
        Trainer(config(tiny_sd, embeds, group, "train.accumulate=2"), out)
    other = make_folder_dataset(tmp_path / "other", groups=1, per_group=4, size=(96, 128), seed=5)
    with pytest.raises(TrainConfigError, match=r"data\.0\.fingerprint|data: "):
        Trainer(config(tiny_sd, embeds, other), out)
    for runtime in ("train.steps=99", "train.checkpoint_every=3", "train.num_workers=0", "train.log_every=5"):
        Trainer(config(tiny_sd, embeds, group, runtime), out).close()  # steps, logging and speed may change
    with pytest.raises(TrainConfigError, match="no training data"):
        Trainer(compose_train_config([f"sd_path={tiny_sd}", "check_sd21=false"]), tmp_path / "none")


# --------------------------------------------------------------------------- training
@pytest.mark.slow
def test_forty_steps_lower_the_loss_and_beat_the_untrained_decoder_through_the_runner(tiny_sd, embeds, group,
                                                                                      tmp_path):
    val = (f"train.val_dataset={{name: folder, root: {group}}}", "train.val_every=20",
           "train.val_runner={rounds: 1, workers: 1}")
    cfg = config(tiny_sd, embeds, group, "train.batch_size=1", "train.checkpoint_every=20", *val, size=128,
                 steps=40)
    out = tmp_path / "run"
    with Trainer(cfg, out) as trainer:
        untrained = tmp_path / "untrained.ckpt"
        trainer.write_decoder_checkpoint(untrained)
        trainer.run()
        method = trainer.validation_method()
    losses = [float(r["loss"]) for r in train_rows(out)]
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    spec = ValidationSpec({"name": "folder", "root": str(group)}, runner={"rounds": 1, "workers": 1})
    before = evaluate(benchmark_config(spec, untrained, method), tmp_path / "val_untrained")["whole/SAD"]
    after = evaluate(benchmark_config(spec, out / "checkpoints" / "last.ckpt", method),
                     tmp_path / "val_trained")["whole/SAD"]
    assert after < before, (after, before)
    with (out / "log.csv").open(newline="") as fh:
        vals = [r for r in csv.DictReader(fh) if r["kind"] == "val"]
    assert [int(r["step"]) for r in vals] == [20, 40] and all(float(r["val_whole/SAD"]) > 0 for r in vals)
    assert float(vals[-1]["val_whole/SAD"]) == pytest.approx(after)
    assert (out / "checkpoints" / "best.ckpt").is_file() and not list((out / "val").glob("*.ckpt"))
    assert (out / "val" / "step_40" / "leaderboard.csv").is_file()


class _Killed(Exception):
    pass


class _KilledAfter(Trainer):
    """Dies right after step ``kill_at`` (its log row written), before any later checkpoint."""

    kill_at = 6

    def _after_step(self) -> None:
        super()._after_step()
        if self.step_count == self.kill_at:
            raise _Killed


@pytest.mark.slow
def test_a_killed_run_resumes_as_if_it_had_not_stopped(tiny_sd, embeds, group, tmp_path):
    """Checkpoints at 4 and 8, validations at 3, 6, 9 and 10; killed after step 6 (validated, not checkpointed)."""
    extra = ("train.checkpoint_every=4", "train.batch_size=2", "train.val_every=3",
             f"train.val_dataset={{name: folder, root: {group}}}", "train.val_runner={rounds: 1, workers: 1}")
    with Trainer(config(tiny_sd, embeds, group, *extra), tmp_path / "full") as t:
        t.run()
    with pytest.raises(_Killed), _KilledAfter(config(tiny_sd, embeds, group, *extra), tmp_path / "cut") as t:
        t.run()
    (tmp_path / "cut" / "checkpoints" / "last.ckpt").unlink()  # as if killed between resume.pt and last.ckpt
    with Trainer(config(tiny_sd, embeds, group, *extra), tmp_path / "cut") as t:
        assert t.step_count == 4 and (tmp_path / "cut" / "checkpoints" / "last.ckpt").is_file()
        t.run()
    rows = {d: train_rows(tmp_path / d, kinds=("train", "val")) for d in ("full", "cut")}
    assert rows["cut"] == rows["full"]  # every loss term, lr and validation metric, in the same order, exactly
    assert [r["step"] for r in rows["full"] if r["kind"] == "val"] == ["3", "6", "9", "10"]
    for name in ("last.ckpt", "best.ckpt"):
        full, cut = (read_state_dict(tmp_path / d / "checkpoints" / name) for d in ("full", "cut"))
        assert full.keys() == cut.keys() and all(torch.equal(full[k], cut[k]) for k in full)

    # a finished run does nothing (no model is even loaded); raising train.steps continues it
    before = (tmp_path / "cut" / "checkpoints" / "resume.pt").stat().st_mtime_ns
    with Trainer(config(tiny_sd, embeds, group, *extra), tmp_path / "cut") as t:
        assert t.finished and t.run() is None and t.extractor is None
    assert (tmp_path / "cut" / "checkpoints" / "resume.pt").stat().st_mtime_ns == before
    with Trainer(config(tiny_sd, embeds, group, *extra, steps=12), tmp_path / "cut") as t:
        assert t.run() is not None and t.step_count == 12
    assert len(train_rows(tmp_path / "cut")) == 12
    assert (tmp_path / "cut" / "val" / "step_12" / "leaderboard.csv").is_file()  # the new end is validated


@pytest.mark.slow
def test_the_checkpoint_loads_strictly_into_method_iconmatting(tiny_sd, embeds, group, tmp_path):
    with Trainer(config(tiny_sd, embeds, group, "train.precompute_features=2", steps=3), tmp_path / "o") as t:
        t.run()
        cached = {k for k, _ in t.source.targets}  # type: ignore[union-attr]
        assert len(t.source.targets) <= 2 * len(cached)  # type: ignore[union-attr]
        trained = {k: v.clone() for k, v in t.decoder.state_dict().items()}
    ckpt = tmp_path / "o" / "checkpoints" / "last.ckpt"
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert raw["global_step"] == 3 and all(k.startswith("in_context_decoder.") for k in raw["state_dict"])
    method = build_method("iconmatting", sd_path=str(tiny_sd), checkpoint=str(ckpt), input_size=64, device="cpu",
                          prompt_embeds_file=str(embeds), check_sd21=False)
    loaded = method.decoder.state_dict()  # type: ignore[attr-defined]
    assert loaded.keys() == trained.keys() and all(torch.equal(loaded[k], trained[k]) for k in trained)
    method.close()


@pytest.mark.slow
def test_torchrun_ddp_equals_accumulation_and_the_command_line_resumes_refuses_and_finishes(tiny_sd, embeds, group,
                                                                                            tmp_path, capsys):
    """2 CPU processes (gloo) × batch 1 = one process × batch 1 × accumulate 2: the same draws in the same BatchNorm
    blocks; only the order of the gradient sums differs (all-reduce mean vs accumulation), so the losses agree to
    fp32 rounding, not bit for bit."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path / "ddp"
    train = overrides(tiny_sd, embeds, group, "train.num_workers=0", "train.batch_size=1", steps=3)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "methods.iconmatting.train", *train, f"hydra.run.dir={out}"]
    first = subprocess.run(ddp, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (out / "checkpoints" / "last.ckpt").is_file() and not list(out.rglob("*.tmp"))
    with Trainer(config(tiny_sd, embeds, group, "train.num_workers=0", "train.batch_size=1", "train.accumulate=2",
                        steps=3), tmp_path / "acc") as t:
        t.run()
    for a, b in zip(train_rows(out), train_rows(tmp_path / "acc"), strict=True):
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-5) and a["lr"] == b["lr"]

    # the command's job in-process: the same effective batch on one process is the same run (finished: nothing to
    # do); another seed is refused with exit status 2, naming the key
    from methods.iconmatting.train.__main__ import train as main_train

    acc = compose_train_config([*train, "train.accumulate=2"])
    assert main_train(acc, str(out)) == 0 and "nothing to do" in capsys.readouterr().out
    assert main_train(compose_train_config([*train, "train.accumulate=2", "train.seed=1"]), str(out)) == 2
    assert "train.seed: 0 → 1" in capsys.readouterr().err


def test_the_log_is_rewritten_on_resume_and_goes_to_tensorboard_when_installed(tmp_path):
    from methods.iconmatting.train.loop import StepResult
    from methods.iconmatting.train.validate import TrainLog

    terms = {"unknown_l1_loss": 1.0, "known_l1_loss": 2.0, "loss_pha_laplacian": 3.0, "loss_gradient_penalty": 4.0}
    sink = TrainLog(tmp_path, resume_step=0, total=6, val_history={}, tensorboard=True, progress="off")
    for n in range(1, 6):
        sink.step(StepResult(n, 10.0 + n, terms, 1e-3, 0.1))
    sink.val(4, {"whole/SAD": 7.5})
    sink.close()
    with (tmp_path / "log.csv").open("a") as fh:
        fh.write("train,1")  # killed while appending the row of step 1x: a truncated line
    # resumed at step 4 (killed after 5) with validation 4 in the summary: step 5 is dropped, validation 4 kept
    sink = TrainLog(tmp_path, resume_step=4, total=6, val_history={4: {"whole/SAD": 7.5}}, tensorboard=True,
                    progress="off")
    sink.step(StepResult(5, 99.0, terms, 1e-3, 0.1))
    sink.close()
    with (tmp_path / "log.csv").open(newline="") as fh:
        rows = [(r["kind"], r["step"], r["loss"] or r["val_whole/SAD"]) for r in csv.DictReader(fh)]
    assert rows == [("train", "1", "11"), ("train", "2", "12"), ("train", "3", "13"), ("train", "4", "14"),
                    ("val", "4", "7.5"), ("train", "5", "99")]
    if importlib.util.find_spec("tensorboard") is None:
        assert not (tmp_path / "tb").exists()
        return
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = {}
    for f in sorted((tmp_path / "tb").iterdir()):
        acc = EventAccumulator(str(f))
        acc.Reload()
        steps.update({s.step: s.value for s in acc.Scalars("train/loss")})
    assert steps[5] == 99.0 and sorted(steps) == [1, 2, 3, 4, 5]
