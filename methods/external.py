"""A method that runs in its own environment (SEEM, MGM, AIM, a user's model), driven through files.

Per ``predict`` call (one per episode: the runner gives it whole episodes) the adapter writes the
episode's references and targets as PNGs and a JSON *spec* (version 1) into its work folder, runs
``command`` (``{spec}`` in any element becomes the spec's path, ``{python}`` this toolkit's
interpreter), and reads one 8-bit grey PNG alpha per target from the path the spec names. With
``persistent=true`` one process is started on the first call and receives one spec path per line on
stdin, answering one JSON line per spec on stdout. The format, the protocol and the errors are
specified in ``methods/peers/external.md``; the demo driver at the end of this module (``python -m
methods.external``) implements both modes and writes a constant alpha.

Failures never stop a run: a missing, unreadable or wrong-size output is that target's
:class:`MethodError`; a non-zero exit, a timeout or a dead persistent process fails every target of the
call, naming the command and its last stderr lines.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from benchmark.io import read_alpha_float, write_png
from benchmark.safe_names import file_name
from benchmark.types import PROMPT_KINDS, Episode, Prompt
from methods._hub import WeightsNotFound, file_digest, sampled_digest
from methods.base import BaseMethod, MethodError, MethodInfo, Output, Reference, Target
from metrics.io import AlphaDecodeError

SPEC_VERSION = 1
GUIDANCES = ("in_context", "trimap", "mask", "prompt", "none")
DEFAULT_PROMPT_KINDS = ("mask", "scribble", "points")
#: stderr lines quoted in error messages
TAIL_LINES = 20
#: seconds ``close()`` waits for a persistent process to exit after its stdin is closed
CLOSE_GRACE_S = 10.0
RUNTIME_PARAMS = frozenset({"timeout_s", "workdir", "persistent", "env", "cwd", "fingerprint_files"})
_PYTHON_NAME = re.compile(r"python[0-9.]*w?(\.exe)?$")


def _info(guidance: str = "in_context", prompt_kinds: Iterable[str] = DEFAULT_PROMPT_KINDS,
          max_references: int = 1) -> MethodInfo:
    """The MethodInfo for these settings; bad values are a ValueError naming the setting."""
    if guidance not in GUIDANCES:
        raise ValueError(f"external: guidance must be one of {GUIDANCES}, got {guidance!r}")
    if isinstance(prompt_kinds, str):
        prompt_kinds = [prompt_kinds]
    kinds = frozenset(str(k) for k in prompt_kinds)
    bad = sorted(kinds - set(PROMPT_KINDS))
    if bad or not kinds:
        raise ValueError(f"external: prompt_kinds must be a non-empty subset of {PROMPT_KINDS}, got {sorted(kinds)}")
    if int(max_references) < 1:
        raise ValueError(f"external: max_references must be >= 1, got {max_references}")
    return MethodInfo(name="external", guidance=guidance, prompt_kinds=kinds,  # type: ignore[arg-type]
                      max_references=int(max_references),
                      description=f"an external command ({guidance}) driven through a JSON spec",
                      runtime_params=RUNTIME_PARAMS, whole_episodes=True)


def _substitute(command: Sequence[str], spec: str | None) -> list[str]:
    """``command`` with ``{python}`` (and ``{spec}`` when given) replaced."""
    out = [a.replace("{python}", sys.executable) for a in command]
    return [a.replace("{spec}", spec) for a in out] if spec is not None else out


def _tail_text(lines: Sequence[str], stream: str = "stderr") -> str:
    lines = [ln.rstrip("\n") for ln in lines if ln.strip()][-TAIL_LINES:]
    if not lines:
        return f"; {stream} was empty"
    return f"; last {stream} lines:\n  " + "\n  ".join(lines)


def _file_tail(path: Path, limit: int = 1 << 16) -> list[str]:
    """The last lines of a log file (at most ``limit`` bytes are read)."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - limit))
            return fh.read().decode("utf-8", "replace").splitlines()[-TAIL_LINES:]
    except OSError:
        return []


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (its own session), before ``proc`` is reaped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def _relative_to(path: str | os.PathLike, cwd: Path | None) -> Path:
    """``path`` with ``~`` expanded, relative paths taken relative to ``cwd`` (the current folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (cwd or Path.cwd()) / p


def _resolve_executable(name: str, cwd: Path | None) -> Path | None:
    """The file ``name`` names: a path (relative to ``cwd``) or a program on PATH."""
    if os.sep in name or (os.altsep and os.altsep in name) or name.startswith("."):
        p = _relative_to(name, cwd)
        return p if p.is_file() else None
    found = shutil.which(name)
    return Path(found) if found else None


def program_file(command: Sequence[str], cwd: Path | None = None) -> Path | None:
    """The file whose content identifies the program: ``command[0]``, or, when that is a Python
    interpreter, the script after it (None for ``-m``/``-c`` or when nothing resolves to a file)."""
    argv = _substitute(command, None)
    first = _resolve_executable(argv[0], cwd)
    if first is None or not (_PYTHON_NAME.match(Path(argv[0]).name) or argv[0] == sys.executable):
        return first
    for arg in argv[1:]:
        if arg in ("-m", "-c"):
            return None
        if arg.startswith("-") or "{spec}" in arg:
            continue
        p = _relative_to(arg, cwd)
        return p if p.is_file() else None
    return None


def _paths_digest(paths: Sequence[str | os.PathLike]) -> list[tuple[str, str]]:
    """(name, content digest) of files, and of every file under folders (relative names): moving
    them keeps the digest, changing a byte of a sampled region changes it."""
    out = []
    for raw in paths:
        p = Path(raw)
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            name = p.name if f == p else f"{p.name}/{f.relative_to(p).as_posix()}"
            out.append((name, sampled_digest(f)))
    return out


@dataclass
class _Outcome:
    """How one call of the command ended: ``error`` (every target fails) or None, and its last log lines."""

    error: str | None
    tail: str


class _Server:
    """A persistent driver process: spec paths in on stdin, one JSON answer per spec out on stdout."""

    def __init__(self, argv: list[str], cwd: Path | None, env: Mapping[str, str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     cwd=cwd, env=dict(env), text=True, encoding="utf-8", errors="replace",
                                     bufsize=1, start_new_session=True)
        self.answers: queue.Queue[dict | None] = queue.Queue()
        self.stderr: deque[str] = deque(maxlen=TAIL_LINES)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [threading.Thread(target=self._read_answers, args=(self.proc.stdout,), daemon=True),
                         threading.Thread(target=self._read_log, args=(self.proc.stderr,), daemon=True)]
        for t in self._threads:
            t.start()

    def _read_answers(self, stream: TextIO) -> None:
        for line in stream:
            answer = _parse_answer(line)
            if answer is not None:
                self.answers.put(answer)
        self.answers.put(None)  # end of stdout: the process is gone

    def _read_log(self, stream: TextIO) -> None:
        for line in stream:
            self.stderr.append(line)

    def tail(self) -> str:
        return _tail_text(list(self.stderr))

    def ask(self, spec: Path, timeout_s: float) -> str | None:
        """Hand one spec over and wait for its answer: None when it is ``ok``, else the error text.
        A dead or timed-out process is killed; the caller starts a new one for the next spec."""
        name = shlex.join(self.argv)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{spec}\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            return f"persistent command {name} is not running (exit status {self._status()})"
        try:
            answer = self.answers.get(timeout=timeout_s)
        except queue.Empty:
            _kill_group(self.proc)
            return (f"persistent command {name} timed out after {timeout_s:g} s on {spec} "
                    "(killed with its process group)")
        if answer is None:
            return f"persistent command {name} exited with status {self._status()} before answering {spec}"
        if answer.get("ok") is True:
            return None
        return f"persistent command {name} reported an error for {spec}: {answer.get('error', '(no error text)')}"

    def _status(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout=5)
        return None

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Close stdin, wait up to ``grace_s`` for the process to exit, then kill its process group."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc)
        for t in self._threads:
            t.join(timeout=2)


def _parse_answer(line: str) -> dict | None:
    """A protocol answer (a JSON object with an ``ok`` key), or None for any other stdout line."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "ok" in obj else None


class ExternalMethod(BaseMethod):
    """Runs ``command`` on a JSON spec per episode (see ``methods/peers/external.md``).

    ``command``: list of arguments, no shell (``{spec}``: the spec's path, required unless
    ``persistent``; ``{python}``: this toolkit's interpreter). ``guidance``/``prompt_kinds``/
    ``max_references``: what the runner gives the method. ``timeout_s``: per call (one spec).
    ``workdir``: where specs, inputs and outputs live (null: a temporary folder removed by ``close``).
    ``cwd``: where the command runs (null: the current folder). ``env``: extra environment variables.
    ``fingerprint_files``: files or folders (the weights the program loads) whose content enters the
    fingerprint; pinning them is the user's responsibility."""

    info = _info()

    def __init__(self, command: Sequence[str], timeout_s: float = 600.0, guidance: str = "in_context",
                 prompt_kinds: Sequence[str] = DEFAULT_PROMPT_KINDS, max_references: int = 1,
                 persistent: bool = False, workdir: str | None = None, env: Mapping[str, Any] | None = None,
                 cwd: str | None = None, fingerprint_files: Sequence[str] = ()) -> None:
        super().__init__()
        self.info = _info(guidance, prompt_kinds, max_references)
        self.command = _check_command(command, bool(persistent))
        if not float(timeout_s) > 0:
            raise ValueError(f"external: timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.persistent = bool(persistent)
        self.cwd = Path(cwd).expanduser().resolve() if cwd else None
        if self.cwd is not None and not self.cwd.is_dir():
            raise FileNotFoundError(f"external: cwd {self.cwd} is not a folder")
        self.env = {**os.environ, **({"PYTHONUNBUFFERED": "1"} if self.persistent else {}),
                    **{str(k): str(v) for k, v in (env or {}).items()}}
        files = [fingerprint_files] if isinstance(fingerprint_files, str) else list(fingerprint_files)
        self.fingerprint_files = [str(_relative_to(p, self.cwd)) for p in files]
        missing = [p for p in self.fingerprint_files if not Path(p).exists()]
        if missing:
            raise WeightsNotFound(f"external: fingerprint_files not found: {missing} (see methods/peers/external.md)")
        self._own_workdir = workdir in (None, "")
        self.workdir = Path(tempfile.mkdtemp(prefix="icmbench-external-") if self._own_workdir
                            else Path(str(workdir)).expanduser()).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        if "\n" in str(self.workdir):
            raise ValueError(f"external: workdir {self.workdir!r} contains a newline")
        self._episode_dir: Path | None = None
        self._ref_entries: list[dict[str, Any]] | None = None
        self._calls = 0
        self._server: _Server | None = None
        #: how many persistent processes were started (tests read it)
        self.starts = 0

    @classmethod
    def describe(cls, **params: Any) -> MethodInfo:
        """The MethodInfo of these settings; nothing is run."""
        return _info(params.get("guidance", "in_context"), params.get("prompt_kinds", DEFAULT_PROMPT_KINDS),
                     params.get("max_references", 1))

    # ------------------------------------------------------------------ protocol
    def prepare(self, references: Sequence[Reference], *, seed: int = 0, episode: Episode | None = None) -> None:
        super().prepare(references, seed=seed, episode=episode)
        self._drop_episode()

    def predict(self, targets: Sequence[Target]) -> list[Output]:
        refs = self._reference_entries()
        assert self._episode_dir is not None
        self._calls += 1
        call = Path(tempfile.mkdtemp(prefix=f"call-{self._calls:05d}-", dir=self._episode_dir))
        try:
            entries = [self._target_entry(call, t) for t in targets]
            spec = {"version": SPEC_VERSION, "episode": self.episode.key if self.episode else "",
                    "seed": self.seed, "references": refs, "targets": entries}
            spec_path = call / "spec.json"
            spec_path.write_text(json.dumps(spec, indent=1) + "\n")
            outcome = self._ask(spec_path) if self.persistent else self._run_once(spec_path, call)
            if outcome.error is not None:
                return [MethodError(f"{outcome.error}{outcome.tail}") for _ in targets]
            return [_read_output(t, Path(e["output"]), self._name(), outcome.tail)
                    for t, e in zip(targets, entries, strict=True)]
        finally:
            shutil.rmtree(call, ignore_errors=True)

    def close(self) -> None:
        """End the persistent process and remove the work files (the whole folder when it is ours)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_episode()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def fingerprint(self) -> str:
        """Hash of the command, the guidance settings, the program file's content (``command[0]`` or the
        script a Python interpreter runs) and ``fingerprint_files``' contents (locations excluded)."""
        program = program_file(self.command, self.cwd)
        doc = {"command": self.command, "guidance": self.info.guidance,
               "prompt_kinds": sorted(self.info.prompt_kinds), "max_references": self.info.max_references,
               "program": file_digest(program) if program is not None else None,
               "files": _paths_digest(self.fingerprint_files)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ files
    def _drop_episode(self) -> None:
        if self._episode_dir is not None:
            shutil.rmtree(self._episode_dir, ignore_errors=True)
        self._episode_dir = None
        self._ref_entries = None

    def _reference_entries(self) -> list[dict[str, Any]]:
        """The spec's references, written once per episode into its folder."""
        refs = self.references  # raises before prepare()
        if self._ref_entries is None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._episode_dir = Path(tempfile.mkdtemp(prefix="episode-", dir=self.workdir))
            folder = self._episode_dir / "references"
            self._ref_entries = [self._reference_entry(folder, r) for r in refs]
        return self._ref_entries

    @staticmethod
    def _reference_entry(folder: Path, ref: Reference) -> dict[str, Any]:
        name = file_name(ref.sample_id, ".png")
        write_png(folder / "images" / name, np.ascontiguousarray(ref.image))
        return {"id": ref.sample_id, "image": str(folder / "images" / name),
                **_prompt_fields(folder / "prompts" / name, ref.prompt)}

    def _target_entry(self, call: Path, target: Target) -> dict[str, Any]:
        name = file_name(target.sample_id, ".png")
        image = call / "targets" / "images" / name
        write_png(image, np.ascontiguousarray(target.image))
        entry: dict[str, Any] = {"id": target.sample_id, "image": str(image), "guidance": None,
                                 "output": str(call / "outputs" / name)}
        (call / "outputs").mkdir(exist_ok=True)
        kind = self.info.guidance
        if kind in ("trimap", "mask"):
            if target.guidance is None:
                raise MethodError(f"external: target '{target.sample_id}' has no {kind} guidance")
            entry["guidance"] = str(call / "targets" / "guidance" / name)
            write_png(entry["guidance"], _guidance_png(target.guidance))
        elif kind == "prompt":
            if target.prompt is None:
                raise MethodError(f"external: target '{target.sample_id}' has no prompt")
            entry.update(_prompt_fields(call / "targets" / "prompts" / name, target.prompt))
        return entry

    # ------------------------------------------------------------------ running
    def _name(self) -> str:
        text = shlex.join(self.command)
        return text if len(text) <= 300 else text[:297] + "..."

    def _run_once(self, spec: Path, call: Path) -> _Outcome:
        """Run the command on one spec; a non-zero exit or a timeout is the outcome's error."""
        argv = _substitute(self.command, str(spec))
        out_log, err_log = call / "stdout.txt", call / "stderr.txt"
        with out_log.open("wb") as out, err_log.open("wb") as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.cwd,
                                        env=self.env, start_new_session=True)
            except OSError as exc:
                return _Outcome(f"external command {self._name()} could not start: {exc}", "")
            try:
                rc = proc.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return _Outcome(f"external command {self._name()} timed out after {self.timeout_s:g} s "
                                "(killed with its process group)", self._tail(err_log, out_log))
            except BaseException:  # Ctrl-C: the command runs in its own session, so end it here
                _kill_group(proc)
                raise
        tail = self._tail(err_log, out_log)
        if rc != 0:
            return _Outcome(f"external command {self._name()} exited with status {rc}", tail)
        return _Outcome(None, tail)

    @staticmethod
    def _tail(err_log: Path, out_log: Path) -> str:
        err = _file_tail(err_log)
        return _tail_text(err) if any(s.strip() for s in err) else _tail_text(_file_tail(out_log), "stdout")

    def _ask(self, spec: Path) -> _Outcome:
        """Hand the spec to the persistent process (started on first use, restarted after it died)."""
        if self._server is not None and not self._server.alive:
            self._server.close(grace_s=0)
            self._server = None
        if self._server is None:
            try:
                self._server = _Server(_substitute(self.command, None), self.cwd, self.env)
            except OSError as exc:
                return _Outcome(f"persistent command {self._name()} could not start: {exc}", "")
            self.starts += 1
        server = self._server
        error = server.ask(spec, self.timeout_s)
        if error is not None and not server.alive:
            server.close(grace_s=0)
            self._server = None
        return _Outcome(error, server.tail())


def _check_command(command: Any, persistent: bool) -> list[str]:
    if isinstance(command, str) or not isinstance(command, Sequence) or not command:
        raise ValueError(f"external: command must be a non-empty list of arguments (no shell), got {command!r}")
    argv = [str(a) for a in command]
    has_spec = any("{spec}" in a for a in argv)
    if persistent and has_spec:
        raise ValueError("external: with persistent=true the command reads spec paths on stdin; remove '{spec}'")
    if not persistent and not has_spec:
        raise ValueError("external: the command must contain '{spec}' (the spec's path), or set persistent=true")
    return argv


def _prompt_fields(labels_path: Path, prompt: Prompt) -> dict[str, Any]:
    """The spec's ``prompt`` (a grey PNG of Prompt.labels(): 0/1/2) and ``points`` ([y, x, is_fg])."""
    write_png(labels_path, np.ascontiguousarray(prompt.labels().astype(np.uint8)))
    points = [[int(y), int(x), bool(fg)] for y, x, fg in prompt.points] if prompt.kind == "points" else []
    return {"prompt": str(labels_path), "points": points}


def _guidance_png(guidance: np.ndarray) -> np.ndarray:
    """A trimap as is (uint8 0/128/255), a boolean mask as 0/255."""
    g = np.asarray(guidance)
    if g.dtype == np.bool_:
        return g.astype(np.uint8) * np.uint8(255)
    return np.ascontiguousarray(g.astype(np.uint8))


def _read_output(target: Target, path: Path, command: str, tail: str) -> Output:
    """The alpha the command wrote for ``target`` (float32 in [0, 1]) or that target's MethodError."""
    tid = target.sample_id
    try:
        return read_alpha_float(path, target.image.shape[:2])
    except FileNotFoundError:
        return MethodError(f"external command {command} wrote no output for target '{tid}' at {path}{tail}")
    except AlphaDecodeError as exc:
        return MethodError(f"external command {command}: unreadable output for target '{tid}': {exc}{tail}")
    except ValueError as exc:
        return MethodError(f"external command {command}: output for target '{tid}': {exc}{tail}")


# ---------------------------------------------------------------------- demo driver
def _demo_spec(spec_path: str, value: float) -> None:
    """Write ``value`` everywhere for every target of the spec (what a real driver replaces)."""
    from PIL import Image

    spec = json.loads(Path(spec_path).read_text())
    if spec.get("version") != SPEC_VERSION:
        raise ValueError(f"{spec_path}: spec version {spec.get('version')!r}, this driver reads {SPEC_VERSION}")
    level = int(np.rint(np.clip(value, 0.0, 1.0) * 255.0))
    for target in spec["targets"]:
        with Image.open(target["image"]) as im:
            w, h = im.size
        Image.fromarray(np.full((h, w), level, np.uint8)).save(target["output"])


def main(argv: Sequence[str] | None = None) -> int:
    """Demo driver: ``python -m methods.external [--value V] SPEC`` (one spec) or ``--persistent``
    (spec paths on stdin, one JSON answer per line on stdout)."""
    parser = argparse.ArgumentParser(prog="python -m methods.external", description=main.__doc__)
    parser.add_argument("spec", nargs="?", help="the spec's path (one-shot mode)")
    parser.add_argument("--value", type=float, default=0.5, help="the alpha written everywhere (default 0.5)")
    parser.add_argument("--persistent", action="store_true", help="read spec paths on stdin")
    args = parser.parse_args(argv)
    if not args.persistent:
        if not args.spec:
            parser.error("a spec path is required without --persistent")
        _demo_spec(args.spec, args.value)
        return 0
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            _demo_spec(line.strip(), args.value)
            answer: dict[str, Any] = {"ok": True}
        except Exception as exc:  # report and keep serving
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
