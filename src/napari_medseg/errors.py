"""One exception family for the whole package.

Every message says what failed, for which file (when there is one) and what to do about it. Errors raised
while handling another exception are chained with ``raise ... from e``.
"""

from __future__ import annotations


class MedsegError(Exception):
    """Base class of every error napari-medseg raises on purpose."""


class InputError(MedsegError, ValueError):
    """A file or array given by the user cannot be used (unreadable, inconsistent, unsupported)."""


class SeriesSelectionError(InputError):
    """A path holds several image series and the caller must choose one (the message lists them)."""

    def __init__(self, message: str, series: list | None = None):
        super().__init__(message)
        self.series = list(series or [])


class GeometryError(InputError):
    """Spacing, origin or direction are missing, inconsistent or not orthonormal."""


class ModelError(MedsegError):
    """A model package or bundle cannot be loaded or does not fit the image."""


class IntegrityError(ModelError):
    """A model package's card or weights do not match its recorded SHA-256 (tampered or truncated)."""


class CancelledError(MedsegError):
    """Long work was cancelled by the user; nothing partial was written."""


class OutputExistsError(MedsegError, FileExistsError):
    """Refusing to overwrite an existing output file (use force/--force)."""


class OutputOverInputError(InputError):
    """An output path is, or lies inside, an input file or folder (never allowed, even with force)."""


class OutputNotWritableError(MedsegError, PermissionError):
    """An output folder cannot be written (checked before any long work starts)."""


class ResourceLimitError(InputError):
    """A file declares more data than memory can hold or than its size makes plausible (hostile/corrupt)."""
