"""Rendering: cameras, backends (gsplat on CUDA; torch and numba on CPU) and one render() entry point."""

from gags_viewer.render.api import RenderOutput, available_backends, render
from gags_viewer.render.camera import Camera

__all__ = ["Camera", "RenderOutput", "available_backends", "render"]
