"""CLIP text encoder over open_clip: model loading, per-phrase cache, async encode.

Which weights a :class:`~gags_viewer.field.language_field.ClipSpec` names, and the fast offline failure
when they are missing, are :mod:`gags_viewer.language.clip_weights`. Loading always goes through
``open_clip.create_model`` (the same path as ``create_model_and_transforms``); on CUDA the model runs in
fp16.

Threads: :meth:`TextEncoder.encode` is thread-safe; :meth:`TextEncoder.encode_async` runs on one
background worker and returns a ``concurrent.futures.Future`` so that a viewer callback can ask for a
new phrase and keep serving renders from cached embeddings meanwhile.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import ClipSpec
from gags_viewer.language.clip_weights import (  # noqa: F401 - ClipWeightsMissing, resolve_clip_spec: old import path
    PROBE_TIMEOUT_S,
    ClipError,
    ClipWeightsMissing,
    describe_spec,
    locate_weights,
    resolve_clip_spec,
)

_config_lock = threading.Lock()
_config_dir: str | None = None


def register_config(path: str | os.PathLike) -> str:
    """Register a local open_clip model config JSON with open_clip and return the name to build it by.

    Accepts a plain model config (``embed_dim``, ``vision_cfg``, ``text_cfg``) or an HF-style
    ``open_clip_config.json`` (``{"model_cfg": {...}}``). The name is unique per content, so a local
    config never shadows a built-in model of the same file name.
    """
    import open_clip

    global _config_dir
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ClipError(f"CLIP model config not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise ClipError(f"CLIP model config {path} is not readable JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("model_cfg"), dict):
        data = data["model_cfg"]
    if not isinstance(data, dict) or not all(k in data for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ClipError(f"CLIP model config {path} lacks embed_dim / vision_cfg / text_cfg")
    digest = hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]
    name = f"gags-local-{path.stem}-{digest}"
    with _config_lock:
        if name not in open_clip.list_models():
            if _config_dir is None:
                _config_dir = tempfile.mkdtemp(prefix="gags_viewer_clip_")
            target = Path(_config_dir) / f"{name}.json"
            target.write_text(json.dumps(data))
            open_clip.add_model_config(target)
    return name


# --------------------------------------------------------------------------------------------------
# The encoder


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TextEncoder:
    """Encodes phrases into L2-normalised CLIP text embeddings, with a per-phrase cache.

    The model is loaded lazily on the first encode (or explicitly with :meth:`load`). A failed load is
    remembered: later calls raise the same error at once instead of retrying.

    Args (besides the attributes): ``cache_dir`` overrides the Hugging Face cache to look in and
    download to; ``probe_timeout`` bounds the reachability check of the download source;
    ``allow_random_weights`` lets a spec without weights build a randomly initialised model (benchmarks
    only: its embeddings mean nothing).

    Attributes:
        spec: the resolved ClipSpec (paths absolute, overrides applied).
        device: where the model runs (CUDA when present, in fp16 there).
    """

    def __init__(
        self,
        spec: ClipSpec,
        *,
        device: torch.device | str | None = None,
        cache_dir: str | None = None,
        probe_timeout: float = PROBE_TIMEOUT_S,
        allow_random_weights: bool = False,
    ):
        self.spec = spec
        self.allow_random_weights = allow_random_weights
        self.device = torch.device(device) if device is not None else default_device()
        self.cache_dir = cache_dir
        self.probe_timeout = probe_timeout
        self._model = None
        self._tokenizer = None
        self._embed_dim: int | None = None
        self._load_error: BaseException | None = None
        self._cache: dict[str, Tensor] = {}
        self._model_lock = threading.RLock()
        self._cache_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    # -- loading ------------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def embed_dim(self) -> int:
        """Width E of the embeddings (loads the model if needed)."""
        self.load()
        assert self._embed_dim is not None
        return self._embed_dim

    def checkpoint_path(self) -> tuple[str, str | None]:
        """(open_clip model name, local checkpoint file or tag to hand to open_clip), without loading.

        Raises :class:`ClipWeightsMissing` / :class:`ClipError` as :meth:`load` would, quickly.
        """
        spec = self.spec
        name = register_config(spec.config_file) if spec.config_file else spec.model
        weights = locate_weights(
            spec,
            cache_dir=self.cache_dir,
            probe_timeout=self.probe_timeout,
            allow_random_weights=self.allow_random_weights,
        )
        return name, weights

    def load(self) -> TextEncoder:
        """Build the open_clip model and tokenizer (once). Raises :class:`ClipError` subclasses."""
        with self._model_lock:
            if self._model is not None:
                return self
            if self._load_error is not None:
                raise self._load_error
            try:
                self._load()
            except GagsError as exc:
                self._load_error = exc
                raise
            return self

    def _load(self) -> None:
        name, weights = self.checkpoint_path()  # fails fast, before the slow open_clip import
        import open_clip

        cuda = self.device.type == "cuda"
        try:
            model = open_clip.create_model(
                name,
                pretrained=weights,
                precision="fp16" if cuda else "fp32",
                device=self.device,
                cache_dir=self.cache_dir,
            )
        except GagsError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClipError(f"cannot load CLIP {describe_spec(self.spec)}: {first[:300]}") from exc
        if hasattr(model, "visual"):
            model.visual = None  # the image tower is never used here; free its memory
        model.eval().requires_grad_(False)
        self._tokenizer = open_clip.get_tokenizer(name)
        self._model = model
        with torch.no_grad():
            probe = self._encode_batch(["object"])
        self._embed_dim = int(probe.shape[-1])

    # -- encoding -----------------------------------------------------------------------------------

    def _encode_batch(self, phrases: list[str]) -> Tensor:
        assert self._tokenizer is not None and self._model is not None, "the model is loaded first"
        tokens = self._tokenizer(phrases).to(self.device)
        with torch.no_grad():
            embeds = self._model.encode_text(tokens)
        return F.normalize(embeds.float(), dim=-1)

    @staticmethod
    def _key(phrase: str) -> str:
        return phrase.strip()

    def cached(self, phrase: str) -> Tensor | None:
        """The cached embedding of ``phrase`` [E] (float32, on ``device``), or None."""
        with self._cache_lock:
            return self._cache.get(self._key(phrase))

    def remember(self, phrase: str, embedding: Tensor) -> None:
        """Use ``embedding`` [E] as the embedding of ``phrase`` from now on (a query that is not text, e.g.
        a clicked feature); it is L2-normalised and stored in float32 on ``device``."""
        if embedding.ndim != 1:
            raise GagsError(f"an embedding must be one vector [E], got shape {list(embedding.shape)}")
        if self._embed_dim is not None and embedding.shape[0] != self._embed_dim:
            raise GagsError(
                f"an embedding of size {embedding.shape[0]} does not fit this CLIP model ({self._embed_dim})"
            )
        with self._cache_lock:
            self._cache[self._key(phrase)] = F.normalize(embedding.detach().float(), dim=-1).to(self.device)

    def is_cached(self, phrases: Sequence[str]) -> bool:
        with self._cache_lock:
            return all(self._key(p) in self._cache for p in phrases)

    def encode(self, phrases: Sequence[str] | str) -> Tensor:
        """Embeddings of ``phrases``, from the cache where possible. Thread-safe; blocks while encoding.

        Returns:
            L2-normalised float32 embeddings on ``device``. [K, E]
        """
        if isinstance(phrases, str):
            phrases = [phrases]
        keys = [self._key(p) for p in phrases]
        with self._cache_lock:
            missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            with self._model_lock:
                self.load()
                with self._cache_lock:
                    missing = [k for k in missing if k not in self._cache]
                if missing:
                    embeds = self._encode_batch(missing)
                    with self._cache_lock:
                        for key, embed in zip(missing, embeds):
                            self._cache[key] = embed
        with self._cache_lock:
            if not keys:
                return torch.zeros(0, self._embed_dim or 0, device=self.device)
            return torch.stack([self._cache[k] for k in keys])

    def encode_async(self, phrases: Sequence[str] | str) -> Future[Tensor]:
        """Encode on the background worker; the future resolves to ``encode(phrases)`` [K, E].

        Already-cached phrases give an already-completed future. Errors (e.g. missing weights) are set
        on the future.
        """
        if isinstance(phrases, str):
            phrases = [phrases]
        phrases = list(phrases)
        if self.is_cached(phrases):
            future: Future = Future()
            future.set_result(self.encode(phrases))
            return future
        with self._cache_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gags-clip-text")
            executor = self._executor
        return executor.submit(self.encode, phrases)

    def close(self) -> None:
        """Stop the background worker (pending encodes finish first)."""
        with self._cache_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


_shared: dict[tuple, TextEncoder] = {}
_shared_lock = threading.Lock()


def shared_text_encoder(
    spec: ClipSpec, *, device: torch.device | str | None = None, cache_dir: str | None = None
) -> TextEncoder:
    """One :class:`TextEncoder` per (spec, device, cache) in this process, so fields that share a CLIP
    model share its weights and embedding cache."""
    dev = torch.device(device) if device is not None else default_device()
    key = (dataclasses.astuple(spec), str(dev), cache_dir)
    with _shared_lock:
        encoder = _shared.get(key)
        if encoder is None:
            encoder = _shared[key] = TextEncoder(spec, device=dev, cache_dir=cache_dir)
        return encoder
