"""Errors of the prompt API (all `MedsegError` subclasses, so the CLI and the widgets show them plainly)."""

from __future__ import annotations

from napari_medseg.errors import InputError, ModelError


class PromptError(InputError):
    """A click or box prompt cannot be used: outside the volume, empty, malformed, or no positive prompt."""


class PromptModelError(ModelError):
    """A model given to `prompt_segment` is not a promptable model (wrong channels, activation or card)."""
