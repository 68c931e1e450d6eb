"""Sample previews of a finished job for the browser UI: original, protected and amplified
perturbation images, and the texts with the trigger marked. Owner-filtered like every job route."""

from __future__ import annotations

import difflib
import io
import json
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from app import crud
from app.api.deps import OffsetQuery, OwnerDep, SessionDep, SettingsDep, StorageDep
from app.api.errors import ApiError, not_found
from app.core.config import Settings
from app.core.storage import Storage, StorageError
from app.models import Job
from app.schemas import Message

router = APIRouter(prefix="/jobs", tags=["samples"])

PREVIEW_PIXELS = 512  # longest side of a preview image
_NOT_FOUND = {404: {"model": Message}, 409: {"model": Message}}


class Segment(BaseModel):
    text: str
    trigger: bool


class SamplePreview(BaseModel):
    index: int
    file: str
    question: list[Segment] | None  # protected question split into plain text and trigger words
    answer: list[Segment]
    psnr: float | None
    ssim: float | None
    linf: float | None
    original_url: str | None  # None once the input dataset was deleted
    protected_url: str
    perturbation_url: str | None


class SamplesPublic(BaseModel):
    data: list[SamplePreview]
    count: int


@dataclass
class _Loaded:
    folder: Path
    original: Any  # mmguard_core.data.Dataset | None
    protected: Any

    def close(self) -> None:
        for dataset in (self.original, self.protected):
            if dataset is not None:
                dataset.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class _PreviewCache:
    """The last few jobs' datasets, extracted once (a preview page asks for many images). Extracting a
    large job takes a while: it holds only that job's lock, so other jobs' previews are not kept waiting."""

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self.items: OrderedDict[uuid.UUID, _Loaded] = OrderedDict()
        self.lock = threading.Lock()  # guards items and loading, held only briefly
        self.loading: dict[uuid.UUID, threading.Lock] = {}

    def _cached(self, job_id: uuid.UUID) -> _Loaded | None:
        with self.lock:
            if job_id in self.items:
                self.items.move_to_end(job_id)
                return self.items[job_id]
            return None

    def get(self, job: Job, source_key: str | None, storage: Storage, settings: Settings) -> _Loaded:
        loaded = self._cached(job.id)
        if loaded is not None:
            return loaded
        with self.lock:
            job_lock = self.loading.setdefault(job.id, threading.Lock())
        with job_lock:
            loaded = self._cached(job.id)  # another request extracted it meanwhile
            if loaded is not None:
                return loaded
            try:
                loaded = _extract(job, source_key, storage, settings)
                with self.lock:
                    self.items[job.id] = loaded
                    while len(self.items) > self.size:
                        self.items.popitem(last=False)[1].close()
            finally:
                with self.lock:
                    self.loading.pop(job.id, None)
            return loaded


def _extract(job: Job, source_key: str | None, storage: Storage, settings: Settings) -> _Loaded:
    from mmguard_core.data import DatasetError, load_dataset

    folder = settings.scratch_root / "previews" / f"{job.id}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=True)
    original = protected = None
    try:
        assert job.archive_key is not None
        with storage.local_path(job.archive_key) as path:
            protected = load_dataset(path, work_dir=folder, decode_images=False)
        if source_key is not None and storage.exists(source_key):
            with storage.local_path(source_key) as path:
                original = load_dataset(path, work_dir=folder, decode_images=False)
    except BaseException as exc:
        _Loaded(folder, original, protected).close()
        if isinstance(exc, DatasetError | StorageError):  # StorageError: e.g. deleted between exists() and the read
            raise ApiError(409, f"the job's files cannot be read for a preview: {exc}") from exc
        raise
    return _Loaded(folder, original, protected)


_cache = _PreviewCache()


def _load(session: SessionDep, owner: OwnerDep, job_id: uuid.UUID, storage: Storage,
          settings: Settings) -> tuple[Job, _Loaded]:
    job = crud.get_job(session, owner, job_id)
    if job is None:
        raise not_found("job")
    if job.status != "succeeded":
        raise ApiError(409, f"the job is {job.status}; samples can be previewed once it has succeeded")
    dataset = crud.get_dataset(session, owner, job.dataset_id) if job.dataset_id is not None else None
    return job, _cache.get(job, dataset.storage_key if dataset else None, storage, settings)


def mark_trigger(original: str | None, protected: str | None) -> list[Segment] | None:
    """The protected text as segments; words the original does not have are the trigger."""
    if protected is None:
        return None
    old, new = (original or "").split(" "), protected.split(" ")
    segments: list[Segment] = []
    for tag, _, _, j1, j2 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if j1 == j2:
            continue
        words = " ".join(new[j1:j2])
        trigger = tag != "equal" and original is not None
        if segments and segments[-1].trigger == trigger:
            segments[-1].text += " " + words
        else:
            segments.append(Segment(text=(" " if segments else "") + words, trigger=trigger))
    return segments


@router.get("/{job_id}/samples", response_model=SamplesPublic, responses=_NOT_FOUND)
def list_samples(
    job_id: uuid.UUID,
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 12,
) -> SamplesPublic:
    """A page of the job's samples: image URLs, texts with the trigger marked, per-image PSNR/SSIM."""
    job, loaded = _load(session, owner, job_id, storage, settings)
    quality: dict[int, dict[str, Any]] = {}
    if job.report_key is not None:
        with storage.open(job.report_key) as handle:
            quality = {int(q["index"]): q for q in json.load(handle).get("images", [])}
    base = f"{settings.api_prefix}/jobs/{job.id}/samples"
    data = []
    protected = loaded.protected.samples
    for sample in protected[offset: offset + limit]:
        before = loaded.original.samples[sample.index] if loaded.original is not None and sample.index < len(
            loaded.original.samples) else None
        q = quality.get(sample.index, {})
        data.append(SamplePreview(
            index=sample.index,
            file=sample.image_path,
            question=mark_trigger(before.question if before else None, sample.question),
            answer=mark_trigger(before.answer if before else None, sample.answer) or [],
            psnr=_finite(q.get("psnr")), ssim=_finite(q.get("ssim")), linf=_finite(q.get("linf")),
            original_url=f"{base}/{sample.index}/original" if before else None,
            protected_url=f"{base}/{sample.index}/protected",
            perturbation_url=f"{base}/{sample.index}/perturbation" if before else None,
        ))
    return SamplesPublic(data=data, count=len(protected))


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _png(array: Any) -> bytes:
    from PIL import Image

    image = Image.fromarray(array)
    image.thumbnail((PREVIEW_PIXELS, PREVIEW_PIXELS), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@router.get(
    "/{job_id}/samples/{index}/{variant}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **_NOT_FOUND},
)
def sample_image(
    job_id: uuid.UUID,
    index: int,
    variant: Literal["original", "protected", "perturbation"],
    owner: OwnerDep,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
) -> Response:
    """One preview image as PNG; `perturbation` is protected minus original, amplified so that the
    bound ε spans the whole grey range (mid-grey = unchanged)."""
    import numpy as np

    from mmguard_core.data import ImageReadError, read_image_uint8

    job, loaded = _load(session, owner, job_id, storage, settings)
    if not 0 <= index < len(loaded.protected.samples):
        raise not_found("sample")
    if variant != "protected" and (loaded.original is None or index >= len(loaded.original.samples)):
        raise ApiError(404, "the original dataset of this job was deleted")
    try:
        protected, _ = read_image_uint8(loaded.protected.image_file(index))
        if variant == "protected":
            return Response(_png(protected), media_type="image/png")
        original, _ = read_image_uint8(loaded.original.image_file(index))
    except ImageReadError as exc:
        raise ApiError(409, f"the image cannot be read: {exc}") from exc
    if variant == "original":
        return Response(_png(original), media_type="image/png")
    if original.shape != protected.shape:
        raise ApiError(409, "the protected image has another size than the original")
    steps = max(1.0, float(job.config.get("epsilon", 8 / 255)) * 255)
    diff = protected.astype(np.float32) - original.astype(np.float32)
    amplified = np.clip(127.5 + diff * (127.5 / steps), 0, 255).astype(np.uint8)
    return Response(_png(amplified), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
