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
