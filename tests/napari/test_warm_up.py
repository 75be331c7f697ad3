"""The widgets' background warm-up thread and napari's thread-unsafe lazy state."""

from __future__ import annotations

import subprocess
import sys


def test_widget_warm_up_never_builds_pints_registry_off_the_gui_thread():
    """pint's lazy unit registry is not thread-safe: the warm-up thread must not be its first user, or a layer
    created on the GUI thread meanwhile fails with "'pixel' is not defined in the unit registry"."""
    code = (
        "import pint, napari.layers\n"
        "from pint.registry import LazyRegistry\n"
        "from napari_medseg._napari.warm_up import warm_up_imports\n"
        "assert isinstance(pint.get_application_registry().get(), LazyRegistry)\n"
        "warm_up_imports().join(300)\n"
        "import sys\n"
        "assert 'pandas' in sys.modules and 'skimage.color' in sys.modules\n"
        "assert isinstance(pint.get_application_registry().get(), LazyRegistry), 'warm-up built the registry'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_warm_up_imports_what_a_segmentation_run_imports():
    """Imports inside a run hold the GIL (OpenVINO's libraries: 75-115 ms, more on a cold disk), so the GUI
    stalls: after the warm-up, a run on the sample phantom imports none of our, OpenVINO's or safetensors'
    modules."""
    code = (
        "import sys, time\n"
        "from napari_medseg._napari.warm_up import warm_up_imports, _WARM_OPTIONAL, _installed\n"
        "warm_up_imports().join(600)\n"
        "missing = [m for m in _WARM_OPTIONAL if _installed(m) and m not in sys.modules]\n"
        "assert not missing, missing\n"
        "from napari_medseg.sample import make_phantom\n"
        "seen = []\n"
        "sys.addaudithook(lambda e, a: seen.append(a[0]) if e == 'import' and a[0] not in sys.modules else None)\n"
        "from napari_medseg.inference.pipeline import segment\n"
        "vol, _ = make_phantom(shape=(40, 64, 64))\n"
        "res = segment(vol, return_uncertainty=True)\n"
        "ours = sorted({m for m in seen if m.split('.')[0] in ('napari_medseg', 'openvino', 'safetensors')})\n"
        "assert not ours, ours\n"
        "print('ok', len(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1].startswith("ok"), \
        (out.stdout[-1000:], out.stderr[-3000:])
