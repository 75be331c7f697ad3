"""Model packages: a folder (or a ``.zip`` of it) holding ``card.json`` and safetensors weights.

* :func:`save_model_package` writes the weights as safetensors, fills ``weights_sha256`` and
  ``package_version`` in the card, and writes everything atomically (a temporary folder renamed into place).
* ``integrity.json`` records the SHA-256 of the canonical card JSON and of the weights: a changed card (two
  class names swapped) or changed weights is an `IntegrityError`; a package without it loads with a warning.
* :func:`load_model_package` checks the SHA-256 before reading a byte of the weights (`IntegrityError`),
  checks the card's sizes and that its network fits the weights on torch's meta device before building it,
  builds the network from the card and loads the state dict strictly: a truncated file or an architecture
  that does not match the weights is a `ModelError` naming the file. ``.pt``/``.pth`` state dicts load with
  ``torch.load(weights_only=True)``; nothing is ever unpickled otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from napari_medseg.errors import IntegrityError, ModelError, OutputExistsError
from napari_medseg.models.card import ModelCard

CARD_NAME = "card.json"
#: the integrity record: SHA-256 of the canonical card JSON and of the weights, so neither can change alone
INTEGRITY_NAME = "integrity.json"
INTEGRITY_FORMAT = "napari-medseg-integrity/1"
#: sliding-window sides beyond this are not a real model (a hostile or corrupt card)
MAX_ROI_SIDE = 1024


class LoadedModel:
    """A model: its network (a ``torch.nn.Module`` in eval mode on the CPU, or any callable
    ``[N, C, *roi] -> logits``), card, path and load warnings.

    ``build``: a loader that builds the network on first use of ``network`` (``load_model(lazy=True)``): a run
    whose cached plan needs no PyTorch network (a converted runtime) then never imports MONAI.
    ``weights_file_sha256``: SHA-256 of the weights file as read, when loaded from one."""

    def __init__(self, network: Any = None, card: ModelCard | None = None, path: Path | None = None,
                 warnings: list[str] | None = None, build=None, weights_file_sha256: str = ""):
        self._network, self.card, self.path = network, card, path
        self.warnings = list(warnings or [])
        self._build = build if network is None else None
        self.weights_file_sha256 = weights_file_sha256
        self.built_sha256 = ""  # `runtimes.weights_sha256` of the network as built from that file (lazy loads)
        self.build_s = 0.0  # seconds that build took

    @property
    def network(self) -> Any:
        if self._build is not None:
            self._network = self._build()
            self._build = None
        return self._network

    @network.setter
    def network(self, value: Any) -> None:
        self._network, self._build = value, None

    @property
    def built(self) -> bool:
        """False while the network is still the weights file's, unbuilt (nothing can have changed it)."""
        return self._build is None

    def is_module(self) -> bool:
        """Whether the network is a ``torch.nn.Module`` (an unbuilt one will be), without building it."""
        if not self.built:
            return True
        import torch

        return isinstance(self._network, torch.nn.Module)

    def __repr__(self) -> str:
        what = type(self._network).__name__ if self.built else "not built yet"
        return f"LoadedModel({self.card.name if self.card else None!r}, network {what}, path={self.path})"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def card_sha256(card_text: str, source: str = "") -> str:
    """SHA-256 of the card's canonical JSON (sorted keys, no whitespace): formatting does not count, content does."""
    try:
        doc = json.loads(card_text)
    except json.JSONDecodeError as e:
        raise ModelError(f"model card {source} is not valid JSON: {e}") from e
    canon = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_bytes(canon.encode("utf-8"))


def integrity_record(card_text: str, weights_name: str, blob: bytes) -> str:
    """The ``integrity.json`` text for a card and its weights."""
    rec = {"format": INTEGRITY_FORMAT, "card_sha256": card_sha256(card_text), "weights_file": weights_name,
           "weights_sha256": sha256_bytes(blob)}
    return json.dumps(rec, indent=2) + "\n"


def verify_integrity(record_text: str | None, card_text: str, blob: bytes, card_src: str, wsrc: str) -> list[str]:
    """`IntegrityError` when the card or the weights differ from the integrity record; warnings if there is none."""
    if record_text is None:
        return [f"{card_src}: the package has no {INTEGRITY_NAME}; its model card (class names, preprocessing) was "
                "not integrity-checked. Re-save the package with this version of napari-medseg to protect it"]
    try:
        rec = json.loads(record_text)
        want_card, want_w = str(rec["card_sha256"]).lower(), str(rec["weights_sha256"]).lower()
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise IntegrityError(f"{card_src}: the package's {INTEGRITY_NAME} is damaged ({e}); re-download or "
                             "re-export the model") from e
    got = card_sha256(card_text, card_src)
    if got != want_card:
        raise IntegrityError(
            f"{card_src}: the model card was modified after the package was written (SHA-256 {got[:16]}… does not "
            f"match {want_card[:16]}… in {INTEGRITY_NAME}): its class names or settings cannot be trusted. "
            "Re-download or re-export the model"
        )
    digest = sha256_bytes(blob)
    if digest != want_w:
        raise IntegrityError(
            f"{wsrc}: SHA-256 {digest[:16]}… does not match {want_w[:16]}… in {INTEGRITY_NAME} — the weights file is "
            "truncated or was modified; re-download or re-export the model"
        )
    return []


def check_card_sizes(card: ModelCard, source: str) -> None:
    """`ModelError`/`ResourceLimitError` for sliding-window settings no real model has (before anything is built)."""
    from napari_medseg._limits import check_allocation

    roi = card.roi_size
    try:
        sides = [int(v) for v in roi]
        ok = len(sides) == 3 and all(float(v) == int(v) for v in roi)
    except (TypeError, ValueError, OverflowError):
        ok, sides = False, []
    if not ok or any(v < 1 or v > MAX_ROI_SIDE for v in sides):
        raise ModelError(f"{source}: roi_size {list(roi) if isinstance(roi, (list, tuple)) else roi!r} is not three "
                         f"whole numbers between 1 and {MAX_ROI_SIDE}; the model card is corrupt")
    sw = card.sw_batch_size
    if not isinstance(sw, int) or isinstance(sw, bool) or not 1 <= sw <= 1024:
        raise ModelError(f"{source}: sw_batch_size {sw!r} is not a whole number between 1 and 1024")
    if not (isinstance(card.overlap, (int, float)) and 0 <= float(card.overlap) < 1):
        raise ModelError(f"{source}: overlap {card.overlap!r} must be in [0, 1)")
    if not isinstance(card.in_channels, int) or not 1 <= card.in_channels <= 64:
        raise ModelError(f"{source}: in_channels {card.in_channels!r} must be a whole number between 1 and 64")
    voxels = sides[0] * sides[1] * sides[2]
    # one window of input + output (float32) is the least any run needs (the planner sizes batches itself)
    check_allocation(voxels * (card.in_channels + card.out_channels) * 4, "one sliding window of the model card", source)


def _state_dict(network_or_state_dict) -> dict:
    import torch

    sd = network_or_state_dict.state_dict() if isinstance(network_or_state_dict, torch.nn.Module) else network_or_state_dict
    if not isinstance(sd, dict):
        raise ModelError(f"expected a torch.nn.Module or a state dict, got {type(network_or_state_dict).__name__}")
    # safetensors refuses shared or non-contiguous storage: give every tensor its own contiguous copy
    return {str(k): v.detach().to("cpu").contiguous().clone() for k, v in sd.items()}


def save_model_package(network_or_state_dict, card: ModelCard, path, force: bool = False) -> Path:
    """Write a model package folder (or a single ``.zip`` when ``path`` ends with ``.zip``); return its path.

    The card is copied; its ``weights_sha256`` and ``package_version`` are filled in. An existing ``path``
    raises `OutputExistsError` unless ``force``.
    """
    from safetensors.torch import save as st_save

    from napari_medseg import __version__

    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; refusing to overwrite a model package (pass force=True / --force)")
    weights_name = Path(card.weights_file or "model.safetensors").name
    if not weights_name.endswith(".safetensors"):
        weights_name = Path(weights_name).stem + ".safetensors"
    blob = st_save(_state_dict(network_or_state_dict), metadata={"format": "pt"})  # one key: deterministic bytes
    card = dataclasses.replace(card, weights_file=weights_name, weights_sha256=sha256_bytes(blob), package_version=__version__)
    card_text = card.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".zip":
        from napari_medseg._atomic import atomic_path

        with atomic_path(path, force=True) as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
                zf.writestr(CARD_NAME, card_text)
                zf.writestr(weights_name, blob)
                zf.writestr(INTEGRITY_NAME, integrity_record(card_text, weights_name, blob))
        return path
    from napari_medseg._atomic import temp_dir_beside

    tmp = temp_dir_beside(path, f".{path.name}.")
    try:
        (tmp / weights_name).write_bytes(blob)
        (tmp / CARD_NAME).write_text(card_text, encoding="utf-8")
        (tmp / INTEGRITY_NAME).write_text(integrity_record(card_text, weights_name, blob), encoding="utf-8")
        if path.exists():  # force: swap the old package out, then remove it
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "pkg")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# ---------------------------------------------------------------------------------------------- loading
def _read_weights_file(wfile: Path) -> bytes:
    from napari_medseg._limits import check_allocation

    check_allocation(wfile.stat().st_size, "the weights file", wfile)
    return wfile.read_bytes()


def _read_integrity(path: Path) -> str | None:
    """The ``integrity.json`` text of a package folder or zip (None when it has none)."""
    if path.is_file() and path.name == CARD_NAME:
        path = path.parent
    if path.is_dir():
        f = path / INTEGRITY_NAME
        return f.read_text(encoding="utf-8") if f.is_file() else None
    try:
        with zipfile.ZipFile(path) as zf:
            names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
            return zf.read(names[INTEGRITY_NAME]).decode("utf-8") if INTEGRITY_NAME in names else None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read the model package zip ({e}); re-download or re-export it") from e


def _read_package(path: Path) -> tuple[str, str, bytes, str]:
    """(card text, card source, weights bytes, weights source) of a package folder, zip or card.json."""
    if path.is_file() and path.name == CARD_NAME:
        path = path.parent
    if path.is_dir():
        card_file = path / CARD_NAME
        if not card_file.is_file():
            raise ModelError(f"{path}: not a model package (no {CARD_NAME}); expected a folder with card.json + weights")
        text = card_file.read_text(encoding="utf-8")
        card = ModelCard.from_json(text, str(card_file))
        wfile = path / Path(card.weights_file).name
        if not wfile.is_file():
            raise ModelError(f"{wfile}: weights file named in {card_file} is missing")
        return text, str(card_file), _read_weights_file(wfile), str(wfile)
    if path.is_file() and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
                if CARD_NAME not in names:
                    raise ModelError(f"{path}: zip holds no {CARD_NAME}; not a napari-medseg model package")
                text = zf.read(names[CARD_NAME]).decode("utf-8")
                card = ModelCard.from_json(text, f"{path}!{CARD_NAME}")
                wname = Path(card.weights_file).name
                if wname not in names:
                    raise ModelError(f"{path}: weights file {wname!r} named in its card is not in the zip")
                from napari_medseg._limits import check_allocation

                check_allocation(zf.getinfo(names[wname]).file_size, "the weights file", f"{path}!{wname}")
                return text, f"{path}!{CARD_NAME}", zf.read(names[wname]), f"{path}!{wname}"
        except (zipfile.BadZipFile, OSError, KeyError) as e:
            raise ModelError(f"{path}: cannot read the model package zip ({e}); re-download or re-export it") from e
    raise ModelError(f"{path}: no such model package (folder with {CARD_NAME}, or a .zip of one)")


def load_state_dict_bytes(blob: bytes, name: str, source: str) -> dict:
    """A state dict from safetensors bytes or a ``.pt`` file (``weights_only=True``); `ModelError` if unreadable."""
    import torch

    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load as st_load

            return st_load(blob)
        sd = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated/corrupt files raise many types
        raise ModelError(f"{source}: weights file is corrupt or truncated ({type(e).__name__}: {e}); re-download it") from e
    for key in ("state_dict", "model", "network", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{source}: does not hold a state dict of tensors")
    return sd


def load_weights(network, state_dict: dict, source: str, architecture: str = "") -> None:
    """``network.load_state_dict(strict=True)`` with a `ModelError` naming the file on mismatch."""
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    try:
        network.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        short = str(e).splitlines()[0:4]
        raise ModelError(
            f"{source}: the weights do not fit the {architecture or type(network).__name__} described by the model "
            f"card (wrong architecture or arguments): {' '.join(s.strip() for s in short)[:600]}"
        ) from e


def load_model_package(path, lazy: bool = False) -> LoadedModel:
    """Load and verify a model package (folder, ``.zip`` or the ``card.json`` inside a folder).

    ``lazy``: build the network on first use if an earlier run built it from these weights (see `loaded_model`)."""
    from napari_medseg.models.network import check_fits

    path = Path(path)
    text, card_src, blob, wsrc = _read_package(path)
    card = ModelCard.from_json(text, card_src)
    warnings: list[str] = verify_integrity(_read_integrity(path), text, blob, card_src, wsrc)
    check_card_sizes(card, card_src)
    if card.weights_sha256:
        digest = sha256_bytes(blob)
        if digest != card.weights_sha256.lower():
            raise IntegrityError(
                f"{wsrc}: SHA-256 {digest[:16]}… does not match the model card's {card.weights_sha256[:16]}… — "
                "the weights file is truncated or was modified; re-download or re-export the model"
            )
    elif not warnings:  # the integrity record checked the weights
        pass
    else:
        warnings.append(f"{card_src} records no weights_sha256; the weights were not integrity-checked")
    sd = load_state_dict_bytes(blob, Path(card.weights_file).name, wsrc)
    file_sha = sha256_bytes(blob)

    def build():
        check_fits(card, sd, wsrc)  # on the meta device: nothing big is built for a card that does not fit
        return built_network(card, sd, wsrc)

    return loaded_model(card, path, warnings, build, file_sha, lazy)


def built_network(card: ModelCard, state_dict: dict, source: str):
    """The card's network with the weights loaded strictly, in eval mode."""
    from napari_medseg.models.network import build_network

    network = build_network(card)
    load_weights(network, state_dict, source, card.architecture)
    network.eval()
    return network


def loaded_model(card, path, warnings, build, file_sha: str, lazy: bool) -> LoadedModel:
    """A `LoadedModel`, its network built now unless ``lazy`` and an earlier run built this card with these
    weights (so a load error still shows at load time for a model not seen before)."""
    from napari_medseg.models.known import is_validated, mark_validated

    if not lazy:
        return LoadedModel(build(), card, path, warnings, weights_file_sha256=file_sha)
    model = LoadedModel(card=card, path=path, warnings=warnings, weights_file_sha256=file_sha)

    def build_and_hash():
        from napari_medseg.inference.runtimes import weights_sha256
        from napari_medseg.models.network import monai_import_seconds

        before, t = monai_import_seconds(), time.perf_counter()
        net = build()
        model.build_s = time.perf_counter() - t + before  # with MONAI's import, wherever this process did it
        model.built_sha256 = weights_sha256(net)  # a plan may map the file to this network while they agree
        mark_validated(card, file_sha)  # lazy loads only: a plain load_model writes nothing
        return net

    if is_validated(card, file_sha):
        model._build = build_and_hash
    else:
        model.network = build_and_hash()
    return model


def read_card(path) -> ModelCard:
    """The model card of a package (or MONAI bundle) without verifying its weights."""
    path = Path(path)
    from napari_medseg.models import is_bundle

    if is_bundle(path):  # e.g. a bundle pulled from the MONAI Model Zoo: <home>/models/<name>/<version>.zip
        from napari_medseg.models.bundle import bundle_card

        return bundle_card(path)[0]
    folder = path.parent if path.name == CARD_NAME else path
    if (folder / CARD_NAME).is_file():
        return ModelCard.from_json((folder / CARD_NAME).read_text(encoding="utf-8"), str(folder / CARD_NAME))
    text, src, _, _ = _read_package(path)
    return ModelCard.from_json(text, src)
