"""Background warm-up when a widget opens: torch/MONAI/pipeline/runtime imports and napari/vispy first-use caches."""

from __future__ import annotations

import threading

_WARM_MODULES = ("torch", "monai.networks.nets", "napari_medseg.models", "napari_medseg.inference.pipeline")
#: what a run imports after the pipeline, when installed: the planner and its runtimes (OpenVINO's import
#: loads its C++ libraries with the GIL held: 75-115 ms here, more on a cold disk), safetensors, the stages
#: that follow inference, and xarray (napari imports it on the GUI thread when the first layer is added)
_WARM_OPTIONAL = ("safetensors.torch", "napari_medseg._limits", "napari_medseg._atomic",
                  "napari_medseg.models.bundle_config", "napari_medseg.models.expressions", "napari_medseg.models.network",
                  "napari_medseg.models.known", "napari_medseg.inference.preprocess",
                  "napari_medseg.inference.monai_parity", "napari_medseg.inference.optimize",
                  "napari_medseg.inference.planner",
                  "napari_medseg.inference.cpu_plan", "napari_medseg.inference.fast_plan",
                  "napari_medseg.inference.runtimes", "openvino", "onnxruntime", "onnx",
                  "napari_medseg.inference.sliding", "napari_medseg.inference.multilabel",
                  "napari_medseg.inference.argmax_resample", "napari_medseg.inference.postprocess",
                  "napari_medseg.inference.uncertainty", "napari_medseg.inference.result", "xarray")


def warm_up_imports() -> threading.Thread:
    """Import torch/MONAI and the pipeline in a background thread, once per process.

    The first import of torch's C extension holds the GIL for hundreds of milliseconds; doing it when the
    widget opens (not inside the first run) keeps the GUI responsive while segmenting. The same goes for
    napari's first Labels layer, which imports pandas and scikit-image's colour module on the spot (about
    250 ms measured here), and for its polygon overlay, whose vispy line visual computes 13 dash patterns in
    pure Python the first time (about 100 ms; vispy caches them with ``functools.lru_cache``): a throw-away
    2x2x2 layer model and a vispy ``DashAtlas`` (numpy only, no GL) built here fill those caches, so
    showing the result only pays for the layer itself.
    """
    global _WARM_THREAD
    if _WARM_THREAD is None:
        import importlib

        # Every napari layer asks pint's application registry for its 'pixel' unit. That registry builds
        # itself lazily on first use (about 0.5 s), and it is not thread-safe: it becomes a UnitRegistry
        # before its definitions are loaded, so a layer created on the GUI thread meanwhile fails with
        # "'pixel' is not defined". The throw-away layer is built only when the registry is already built.
        units_ready = _pint_registry_built()

        def work():
            for name in _WARM_MODULES:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - a failing import is reported by the run itself
                    return
            for name in _WARM_OPTIONAL:
                if _installed(name):
                    try:
                        importlib.import_module(name)
                    except Exception:  # noqa: BLE001 - an optional runtime that fails is the run's to report
                        pass
            _read_shader_files()
            try:
                import numpy as np

                for name in ("pandas", "skimage.color"):  # what napari's first Labels layer imports lazily
                    importlib.import_module(name)
                if units_ready:  # never the first use of pint's registry off the GUI thread (see below)
                    from napari.layers import Labels

                    Labels(np.zeros((2, 2, 2), dtype=np.uint8))  # a model object only: no Qt, no vispy
                from vispy.visuals.line.dash_atlas import DashAtlas

                DashAtlas()  # fills vispy's lru_cache of dash patterns (numpy only)
            except Exception:  # noqa: BLE001 - only a warm-up
                pass

        _WARM_THREAD = threading.Thread(target=work, name="napari-medseg warm-up", daemon=True)
        _WARM_THREAD.start()
    return _WARM_THREAD


_WARM_THREAD: threading.Thread | None = None
_PROMPT_THREADS: dict = {}


def warm_up_prompt(model=None) -> threading.Thread:
    """`warm_up_imports`, then one throw-away click with ``model`` (None: the shipped prompt model) on a tiny
    volume, in a background thread, once per process and model: the prompt modules and scipy/scikit-image
    imports, the model package read (and cached), and the network's first-call kernel set-up (3-4 s in all
    here) happen when the Prompt widget opens, not on the user's first click. A run should ``join()`` the
    thread first: the throw-away click sets torch's thread count while it runs."""
    key = id(model) if model is not None else None
    if key not in _PROMPT_THREADS:
        base = warm_up_imports()

        def work():
            base.join()
            try:
                import numpy as np

                from napari_medseg.prompt.segment import prompt_segment
                from napari_medseg.volume import Volume

                prompt_segment(Volume(np.zeros((8, 8, 8), np.float32), (3.0, 3.0, 3.0)), positive=[(4, 4, 4)], model=model)
            except Exception:  # noqa: BLE001 - only a warm-up: the user's click reports what is wrong
                pass

        _PROMPT_THREADS[key] = threading.Thread(target=work, name="napari-medseg prompt warm-up", daemon=True)
        _PROMPT_THREADS[key].start()
    return _PROMPT_THREADS[key]


def _installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def _read_shader_files() -> None:
    """Read vispy's GLSL library once, so that the first overlay's shader look-ups (``os.path.exists`` on
    the GUI thread, one per include) hit the page cache: 104 ms for the polygon overlay on a cold disk."""
    import os

    try:
        import vispy.glsl
    except ImportError:
        return
    for root, _, files in os.walk(os.path.dirname(vispy.glsl.__file__)):
        for f in files:
            try:
                with open(os.path.join(root, f), "rb") as fh:
                    fh.read()
            except OSError:
                pass


def _pint_registry_built() -> bool:
    try:
        import pint
        from pint.registry import LazyRegistry
    except ImportError:  # napari without pint: nothing to race on
        return True
    return not isinstance(pint.get_application_registry().get(), LazyRegistry)
