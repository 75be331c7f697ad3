"""Click and box prompts: segment or fix one structure in 3D with a few clicks (see docs/prompts.md).

    import napari_medseg as ms
    mask = ms.prompt_segment(vol, positive=[(40, 120, 200)])                     # one click inside the organ
    mask = ms.prompt_segment(vol, positive=[(40, 120, 200)], negative=[(44, 130, 260)], previous=mask)

The shipped promptable model (``napari_medseg/models/prompt/``) is a MONAI UNet taking the image, positive
and negative clicks (DeepGrow encoding) and the previous mask; it runs on a fixed 64³ crop around the prompts.
``model=`` may also name a MONAI DeepEdit bundle (folder or zip; `napari_medseg.prompt.deepedit`).
"""

from __future__ import annotations

from napari_medseg.prompt.errors import PromptError, PromptModelError
from napari_medseg.prompt.model import load_prompt_model
from napari_medseg.prompt.prompts import Prompts, parse_prompts
from napari_medseg.prompt.segment import prompt_segment

__all__ = ["prompt_segment", "load_prompt_model", "PromptError", "PromptModelError", "Prompts", "parse_prompts"]
