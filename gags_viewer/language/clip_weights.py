"""Where the pretrained CLIP weights are: spec resolution, local cache lookup, fast offline failure.

Which model: a field's :class:`~gags_viewer.field.language_field.ClipSpec` names either an open_clip
model plus a pretrained tag (real GAGS fields: ViT-B-16 / laion2b_s34b_b88k) or a local model config
JSON plus a checkpoint file (the bundled demo). :func:`resolve_clip_spec` applies command-line
overrides.

Offline: before open_clip is asked for a pretrained tag, the weights are looked up in the caches open_clip
downloads into (the Hugging Face hub cache, or ``~/.cache/clip`` for URL-only tags). If they are there,
open_clip gets the file path, so nothing touches the network. If not, and the hub is unreachable
(``HF_HUB_OFFLINE`` set, or a 3-second probe fails), :class:`ClipWeightsMissing` is raised at once with
one line naming the weights, where open_clip looks and how to point to a local file; open_clip's own
download (which retries for ~46 s offline) is only started when the hub answered.

Nothing here imports open_clip itself (only its table of pretrained tags), nor loads a model: that is
:mod:`gags_viewer.language.clip_text`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

from gags_viewer.errors import GagsError
from gags_viewer.field.language_field import ClipSpec

CHECKPOINT_FLAG = "--clip-checkpoint"
"""The command-line option that points to a local open_clip checkpoint (named in error messages)."""

PROBE_TIMEOUT_S = 3.0

BUNDLED_PREFIX = "gags-viewer:"
"""A CLIP file reference that starts with this names a file shipped with gags-viewer, relative to the
project root (``gags-viewer:assets/demo_clip/gags-demo-clip.json``), so a field that uses a bundled
model keeps working wherever its directory is copied."""
BUNDLED_ROOT = Path(__file__).resolve().parents[2]
"""The directory bundled references are relative to (the one holding ``assets/``)."""


def bundled_reference(path: str | os.PathLike) -> str | None:
    """``path`` as a bundled reference (:data:`BUNDLED_PREFIX`) if it lies under :data:`BUNDLED_ROOT`,
    else None."""
    try:
        relative = Path(path).resolve().relative_to(BUNDLED_ROOT)
    except ValueError:
        return None
    return BUNDLED_PREFIX + relative.as_posix()


def resolve_reference(path: str | os.PathLike, base_dir: str | os.PathLike | None) -> str:
    """A config/checkpoint reference as a path: a bundled reference under :data:`BUNDLED_ROOT`, a
    relative path under ``base_dir`` (when given), ``~`` expanded."""
    text = str(path)
    if text.startswith(BUNDLED_PREFIX):
        return str(BUNDLED_ROOT / text[len(BUNDLED_PREFIX) :])
    resolved = Path(text).expanduser()
    if not resolved.is_absolute() and base_dir is not None:
        resolved = Path(base_dir) / resolved
    return str(resolved)


class ClipError(GagsError):
    """The CLIP text model cannot be set up (bad config, bad checkpoint, unknown model or tag)."""


class ClipWeightsMissing(ClipError):
    """The pretrained CLIP weights are neither on this machine nor downloadable right now."""


def resolve_clip_spec(
    spec: ClipSpec,
    *,
    base_dir: str | os.PathLike | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    config_file: str | os.PathLike | None = None,
    checkpoint_file: str | os.PathLike | None = None,
) -> ClipSpec:
    """The field's CLIP spec with relative paths resolved and command-line overrides applied.

    Args:
        spec: from the field's metadata.
        base_dir: the field directory; the spec's relative config/checkpoint paths are relative to it
            (bundled references, see :data:`BUNDLED_PREFIX`, to the project root).
        model: open_clip model name override. Drops the field's local config (unless ``config_file``
            is also given), since it names another architecture.
        pretrained: pretrained tag (or file path) override. Drops the field's checkpoint file (unless
            ``checkpoint_file`` is also given).
        config_file: a local open_clip model config JSON (relative to the working directory).
        checkpoint_file: a local checkpoint (.bin, .pt, .safetensors), used instead of any tag.
    """

    def local(path, base):
        return None if path is None else resolve_reference(path, base)

    out = dataclasses.replace(
        spec,
        config_file=local(spec.config_file, base_dir),
        checkpoint_file=local(spec.checkpoint_file, base_dir),
    )
    if model is not None:
        out = dataclasses.replace(out, model=model, config_file=None)
    if pretrained is not None:
        out = dataclasses.replace(out, pretrained=pretrained, checkpoint_file=None)
    if config_file is not None:
        out = dataclasses.replace(out, config_file=local(config_file, None))
    if checkpoint_file is not None:
        out = dataclasses.replace(out, checkpoint_file=local(checkpoint_file, None))
    return out


def portable_clip_spec(spec: ClipSpec) -> ClipSpec:
    """A resolved spec (:func:`resolve_clip_spec`) for a field written to another directory: files of the
    project as bundled references, other files as absolute paths, so the copy finds the same model."""

    def portable(path):
        if path is None:
            return None
        return bundled_reference(path) or str(Path(path).resolve())

    return dataclasses.replace(
        spec, config_file=portable(spec.config_file), checkpoint_file=portable(spec.checkpoint_file)
    )


def describe_spec(spec: ClipSpec) -> str:
    """One short human description of a spec, e.g. ``ViT-B-16 / laion2b_s34b_b88k``."""
    model = spec.model if spec.config_file is None else f"{spec.model} (config {spec.config_file})"
    weights = spec.checkpoint_file or spec.pretrained or "no weights"
    return f"{model} / {weights}"


def hf_cache_dir() -> str:
    """The Hugging Face hub cache that hf_hub_download uses, from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return os.path.expanduser(os.environ["HUGGINGFACE_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "huggingface", "hub")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """Whether the Hugging Face hub is declared offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover - huggingface_hub missing
        return False


@dataclasses.dataclass
class _TagLocation:
    """Where open_clip would fetch a pretrained tag from and where it caches it."""

    hub_repo: str | None  # e.g. laion/CLIP-ViT-B-16-laion2B-s34B-b88K
    filenames: list[str]  # candidate files, preferred first
    url: str | None
    cache_dir: str
    local_file: str | None  # found in the cache

    def where(self) -> str:
        if self.hub_repo:
            files = " or ".join(self.filenames)
            return f"{self.hub_repo} ({files}) in the Hugging Face cache {self.cache_dir}"
        return f"{os.path.basename(self.url or '')} in {self.cache_dir}"


_LIGHT_PACKAGE = "_gags_viewer_open_clip_tables"


def _open_clip_pretrained():
    """open_clip's ``pretrained`` module (its table of tags), loaded without importing open_clip itself.

    ``import open_clip`` pulls in torchvision and timm (seconds); the tag table needs neither. The file is
    loaded from open_clip's installed package under a private package name; if that fails for any
    reason, the real module is imported.
    """
    if "open_clip.pretrained" in sys.modules:
        return sys.modules["open_clip.pretrained"]
    try:
        if _LIGHT_PACKAGE not in sys.modules:
            spec = importlib.util.find_spec("open_clip")
            package = types.ModuleType(_LIGHT_PACKAGE)
            package.__path__ = list(spec.submodule_search_locations)
            sys.modules[_LIGHT_PACKAGE] = package
        return importlib.import_module(f"{_LIGHT_PACKAGE}.pretrained")
    except Exception:
        sys.modules.pop(_LIGHT_PACKAGE, None)
        from open_clip import pretrained

        return pretrained


def locate_pretrained(model: str, tag: str, cache_dir: str | None = None) -> _TagLocation:
    """Find the weights of an open_clip pretrained tag in the local caches, without any network access.

    Raises:
        ClipError: ``tag`` is not a pretrained tag of ``model``.
    """
    oc_pretrained = _open_clip_pretrained()

    name = model.replace("/", "-")
    cfg = oc_pretrained.get_pretrained_cfg(name, tag)
    if not cfg:
        import open_clip

        tags = oc_pretrained.list_pretrained_tags_by_model(name)
        if name not in open_clip.list_models():
            raise ClipError(f"unknown open_clip model '{model}'; see open_clip.list_models()")
        raise ClipError(
            f"'{tag}' is not a pretrained tag of open_clip model {model} nor an existing file"
            + (f"; known tags: {', '.join(tags)}" if tags else "")
        )
    hub = cfg.get("hf_hub", "")
    if cfg.get("file"):
        return _TagLocation(
            None, [], cfg["file"], os.path.dirname(cfg["file"]), cfg["file"] if os.path.isfile(cfg["file"]) else None
        )
    if hub:
        repo, filename = os.path.split(hub)
        filename = filename or oc_pretrained.HF_WEIGHTS_NAME
        candidates = list(oc_pretrained._get_safe_alternatives(filename)) + [filename]
        cache = cache_dir or hf_cache_dir()
        found = None
        try:
            from huggingface_hub import try_to_load_from_cache

            for candidate in candidates:
                path = try_to_load_from_cache(repo, candidate, cache_dir=cache)
                if isinstance(path, str) and os.path.isfile(path):
                    found = path
                    break
        except ImportError:  # pragma: no cover
            pass
        return _TagLocation(repo, candidates, None, cache, found)
    url = cfg.get("url", "")
    cache = cache_dir or os.path.expanduser("~/.cache/clip")
    target = os.path.join(cache, os.path.basename(url))
    return _TagLocation(None, [], url, cache, target if os.path.isfile(target) else None)


def _probe(location: _TagLocation, timeout: float) -> str | None:
    """None if the download source answers within ``timeout`` seconds, else the reason it does not."""
    if location.hub_repo:
        try:
            from huggingface_hub import constants, get_hf_file_metadata
            from huggingface_hub.errors import HfHubHTTPError

            endpoint = os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")
            url = f"{endpoint}/{location.hub_repo}/resolve/main/{location.filenames[-1]}"
            get_hf_file_metadata(url, timeout=timeout)
            return None
        except HfHubHTTPError:
            return None  # the hub answered (even 401/404 means it is reachable; open_clip reports the rest)
        except Exception as exc:  # connection refused, DNS failure, timeout, offline mode
            return f"the Hugging Face hub is unreachable ({type(exc).__name__})"
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(location.url or "", method="HEAD"), timeout=timeout).close()
        return None
    except urllib.error.HTTPError:
        return None
    except Exception as exc:
        return f"{location.url} is unreachable ({type(exc).__name__})"


def _missing_message(spec: ClipSpec, location: _TagLocation, reason: str) -> str:
    return (
        f"CLIP weights {spec.model} / {spec.pretrained} are missing and cannot be downloaded ({reason}): "
        f"open_clip looks for {location.where()}; download them once with network access "
        f"(or set HF_HOME / HF_HUB_CACHE to a cache that has them), or point to a local file with "
        f"{CHECKPOINT_FLAG} /path/to/open_clip_pytorch_model.bin"
    )


def locate_weights(
    spec: ClipSpec,
    *,
    cache_dir: str | None = None,
    probe_timeout: float = PROBE_TIMEOUT_S,
    allow_random_weights: bool = False,
) -> str | None:
    """The weights to hand to open_clip for ``spec``: a local file, or the tag itself when it has to be
    downloaded and the download source answers; None for a spec without weights when
    ``allow_random_weights`` (a randomly initialised model). Never loads anything.

    Raises:
        ClipWeightsMissing: the checkpoint file does not exist, or the tag's weights are not cached and
            cannot be downloaded now (one line: which weights, where open_clip looks, how to point to a
            local file).
        ClipError: no weights named, a local config without a checkpoint file, or an unknown model/tag.
    """
    if spec.checkpoint_file:
        if not os.path.isfile(spec.checkpoint_file):
            raise ClipWeightsMissing(
                f"CLIP checkpoint file not found: {spec.checkpoint_file} (point to an existing file with {CHECKPOINT_FLAG})"
            )
        return spec.checkpoint_file
    if not spec.pretrained:
        if allow_random_weights:
            return None
        raise ClipError(
            f"no CLIP weights named for model {spec.model}: give a pretrained tag or {CHECKPOINT_FLAG} FILE"
        )
    if os.path.isfile(os.path.expanduser(spec.pretrained)):
        return os.path.expanduser(spec.pretrained)
    if spec.config_file:
        raise ClipError(
            f"pretrained '{spec.pretrained}' is not a file; a local CLIP config needs a checkpoint file ({CHECKPOINT_FLAG})"
        )
    location = locate_pretrained(spec.model, spec.pretrained, cache_dir)
    if location.local_file:
        return location.local_file
    if hub_offline() and location.hub_repo:
        raise ClipWeightsMissing(_missing_message(spec, location, "HF_HUB_OFFLINE is set"))
    reason = _probe(location, probe_timeout)
    if reason is not None:
        raise ClipWeightsMissing(_missing_message(spec, location, reason))
    return spec.pretrained  # reachable: let open_clip download it
