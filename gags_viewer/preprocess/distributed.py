"""Per-image SAM + CLIP work as Ray tasks (``gags-viewer preprocess --ray ADDRESS``).

Ray is an optional extra (``pip install -e ".[distributed]"``). Each task runs the same per-image function
as a local run (:func:`gags_viewer.preprocess.run.process_image`) and returns the ``_f`` / ``_s`` arrays;
the driver writes them, so the files are the same bytes as a local run's on the same kind of device with
as many intra-op threads (a CPU task gets one: Ray sets ``OMP_NUM_THREADS`` to its CPU count, and CLIP's
float sums depend on the thread count). The only assumption is that
every worker reads the scene directory (images, depth maps), the SAM checkpoint and the CLIP weights at
the same paths (shared storage). A task takes one GPU where the cluster has GPUs; a worker process keeps
its models loaded between tasks.
"""

from __future__ import annotations

from collections.abc import Iterator

from gags_viewer.errors import GagsError

_MODELS: dict[str, tuple] = {}
"""Per worker process: the models of a config (keyed by its repr), built on first use."""


def _worker_models(config):
    key = repr(config)
    if key not in _MODELS:
        from gags_viewer.preprocess.run import build_encoder, build_sam_source

        device = config.torch_device()
        _MODELS.clear()
        _MODELS[key] = (build_sam_source(config, device), build_encoder(config, device))
    return _MODELS[key]


def _process(config, name: str):
    from gags_viewer.preprocess.run import process_image

    return process_image(config, name, *_worker_models(config))


def connect(address: str):
    """The ``ray`` module, connected to ``address`` ("local" starts one here) unless already initialised."""
    try:
        import ray
    except ImportError:
        raise GagsError('--ray needs Ray: pip install -e ".[distributed]" (or pip install ray)') from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, ignore_reinit_error=True, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise GagsError(f"cannot connect to the Ray cluster at {address}: {str(error).splitlines()[0]}") from None
    return ray


def run_on_ray(config, names: list[str]) -> Iterator:
    """Process ``names`` as Ray tasks; yield each image's ``ImageFeatures`` as it completes.

    Args:
        config: the :class:`~gags_viewer.preprocess.run.PreprocessConfig` (sent to every task).
        names: the images still to do.
    """
    from tqdm.auto import tqdm

    ray = connect(config.ray)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_gpus=gpus, num_cpus=1)(_process)
    if gpus == 0 and config.device == "auto":
        from dataclasses import replace

        config = replace(config, device="cpu")
    pending = [task.remote(config, name) for name in names]
    with tqdm(
        total=len(pending), desc="SAM masks + CLIP features (Ray)", unit="image", disable=not config.progress
    ) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                result = ray.get(done[0])
            except ray.exceptions.RayTaskError as error:  # a user mistake in a task stays one line
                if isinstance(getattr(error, "cause", None), GagsError):
                    raise error.cause from None
                raise
            yield result
            bar.update(1)
