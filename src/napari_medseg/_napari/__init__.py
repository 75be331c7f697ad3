"""napari integration: the only part of napari-medseg that imports napari, qtpy or magicgui.

Modules: `reader` / `writer` / `sample` (npe2 contributions), `layers` (Volume <-> layer adapters),
`_worker` (run core step generators in thread workers with progress + cancel) and the dock widgets.
Nothing is imported here so that ``import napari_medseg._napari.reader`` stays light.
"""
