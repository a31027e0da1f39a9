"""Video object matting: a clip whose first frame, with its matte, is the reference for every frame.

``dataset=video dataset.path=CLIP dataset.reference_alpha=FIRST_FRAME_MATTE.png`` where CLIP is a
video file (decoded with OpenCV into a cache folder of PNG frames, once) or a folder of frames
(sorted by name). The reference prompt is drawn from ``reference_alpha`` (a matte or mask of the
first used frame). All frames are targets; frames have no ground truth, so their predictions are
saved (``predictions/r0/<frame>.png``) but not scored (rows with status ``unscored``), except the
first frame. ``python -m benchmark.video RUN_DIR --composite out.mp4`` writes a composite clip.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import cv2

from benchmark.datasets.common import DatasetError, build_dataset, index_by_stem
from benchmark.types import Dataset, Sample

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def _cache_root() -> Path:
    return Path(os.environ.get("ICMBENCH_CACHE", Path.home() / ".cache" / "icmbench")).expanduser()


def extract_frames(video: Path, stride: int = 1, max_frames: int | None = None,
                   cache: str | os.PathLike | None = None) -> tuple[Path, float]:
    """Decode ``video`` into ``<cache>/video-<hash>/NNNNN.png`` (once; reused afterwards) and its fps.

    The hash covers the file's path, size, modification time, stride and frame limit."""
    st = video.stat()
    key = hashlib.sha256(f"{video.resolve()}|{st.st_size}|{st.st_mtime_ns}|{stride}|{max_frames}".encode())
    folder = (Path(cache).expanduser() if cache else _cache_root()) / f"video-{key.hexdigest()[:16]}"
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DatasetError(f"cannot open video {video} with OpenCV")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 25.0) / stride
    if (folder / ".complete").exists():
        cap.release()
        return folder, fps
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".frames-"))
    index = written = 0
    try:
        while max_frames is None or written < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % stride == 0:
                cv2.imwrite(str(tmp / f"{written:05d}.png"), frame)
                written += 1
            index += 1
        if written == 0:
            raise DatasetError(f"{video}: no frame could be decoded")
        (tmp / ".complete").touch()
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        cap.release()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder, fps


def load_video(path: str | os.PathLike, reference_alpha: str | os.PathLike, name: str = "video",
               stride: int = 1, max_frames: int | None = None, cache: str | None = None,
               fps: float | None = None) -> Dataset:
    """Frames of a clip as one group whose first frame is the fixed reference."""
    path = Path(path).expanduser()
    ref_alpha = Path(reference_alpha).expanduser()
    if not ref_alpha.is_file():
        raise DatasetError(f"reference matte not found: {ref_alpha}")
    if path.is_dir():
        frames = index_by_stem(path)
        stems = sorted(frames)[::stride][:max_frames]
        found_fps = fps or 25.0
    elif path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
        folder, found_fps = extract_frames(path, stride, max_frames, cache)
        frames = index_by_stem(folder)
        stems = sorted(frames)
        found_fps = fps or found_fps
    else:
        raise DatasetError(f"video: {path} is neither a folder of frames nor a video file {VIDEO_EXTENSIONS}")
    if not stems:
        raise DatasetError(f"video: no frames in {path}")
    group = path.stem
    samples = [Sample(id=s, group=group, image_path=frames[s], alpha_path=ref_alpha if i == 0 else None)
               for i, s in enumerate(stems)]
    return build_dataset(name, frames[stems[0]].parent, samples,
                         meta={"fixed_reference": stems[0], "fps": found_fps, "source": str(path)},
                         allow_outside_root=True)  # the reference matte is a file the user named
