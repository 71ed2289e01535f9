"""Training on CUDA through gsplat (runs wherever CUDA is present): gradients match the CPU torch backend's
analytic backward, and the GAGS trainer learns on the GPU as it does on the CPU."""

import pytest
import torch

from gags_viewer.render.api import render
from gags_viewer.render.camera import Camera, intrinsics, look_at
from gags_viewer.train.synthetic import make_synthetic_scene, write_synthetic_scene
from gags_viewer.train.trainer import Trainer
from tests.test_render_gpu import _scene
from tests.test_train_trainer import config_for

pytestmark = pytest.mark.gpu


def test_feature_gradients_match_the_torch_backend():
    """d(loss)/d(features) through gsplat's backward equals the torch backend's analytic backward."""
    field = _scene(5_000)
    camera = Camera.from_camera_to_world(
        look_at([0.0, -1.0, -5.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]), intrinsics(260, 260, 320, 240), 320, 240
    )
    target = torch.rand(240, 320, 16, generator=torch.Generator().manual_seed(1))
    grads = {}
    for backend, device in (("gsplat", "cuda"), ("torch", "cpu")):
        features = field.features.clone().to(device).requires_grad_(True)
        out = render(field.to(device), camera, rgb=False, features=features, backend=backend)
        loss = ((out.features - target.to(device)) ** 2).mean()
        loss.backward()
        grads[backend] = features.grad.cpu()
    scale = grads["torch"].abs().max()
    assert scale > 0
    assert (grads["gsplat"] - grads["torch"]).abs().max() < 1e-3 * scale


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_scene_gpu")
    write_synthetic_scene(
        make_synthetic_scene(num_objects=3, gaussians_per_object=60, num_views=4, width=64, height=48), root
    )
    return root


def test_trainer_learns_on_cuda(scene_dir, tmp_path):
    config = config_for(scene_dir, tmp_path / "out", iterations=50, feature_lr=5e-2, decoder_lr=5e-3, device="cuda")
    trainer = Trainer(config)
    assert trainer.features.device.type == "cuda"
    trainer.run(checkpoints=False)
    distill = [r["distill"] for r in trainer.history]
    first, last = sum(distill[:10]) / 10, sum(distill[-10:]) / 10
    assert last < 0.6 * first, (first, last)
    field = trainer.snapshot("cpu")
    assert field.features.device.type == "cpu" and torch.isfinite(field.features).all()
