"""Get MONAI Model Zoo bundles by name: the zoo's index, verified downloads, storage in the models home.

* Index: the zoo's ``models/model_info.json`` (``{"<name>_v<version>": {"checksum": ..., "source": <zip url>}}``),
  the file `monai.bundle.get_all_bundles_list` / `get_bundle_versions` read (they hard-code GitHub; we read the
  same file from ``index_url``, ``$MEDSEG_ZOO_INDEX`` or the zoo's GitHub address, so a mirror or a test server
  can stand in) and parse it the way they do.
* Download: the zip is streamed with the standard library's ``urllib`` (what MONAI's ``download_url`` uses,
  plus a timeout, progress and cancel between chunks) into a temporary folder beside its destination; the
  zoo's published checksum (SHA-1, 40 hex digits) is verified with MONAI's ``check_hash``; the zip must be a
  bundle napari-medseg can run (`bundle_card`); only then is it renamed into place
  ``<models home>/models/<name>/<version>.zip`` (atomic). Anything that fails removes the partial file.
* The first pulled version of a name becomes its active version, so ``--model NAME`` finds it; fine-tuned
  versions ``vN`` then stack on top as for the default model (``medseg models --activate NAME@VERSION``
  rolls back).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from napari_medseg.errors import CancelledError, IntegrityError, ModelError
from napari_medseg.progress import Progress, run_steps

ZOO_INDEX_URL = "https://raw.githubusercontent.com/Project-MONAI/model-zoo/dev/models/model_info.json"
TIMEOUT_S = 30.0
CHUNK = 1 << 16
#: 3D segmentation bundles whose names do not say "segmentation"
_SEG_3D_EXTRA = {"prostate_mri_anatomy", "wholeBrainSeg_Large_UNEST_segmentation", "swin_unetr_btcv_segmentation"}
#: not 3D automatic segmentation (2D, pathology, video, click-guided, detection, generative)
_NOT_3D_SEG = re.compile(r"endoscopic|pathology|2d|deepedit|vista|detection|classification|gan|generat|"
                         r"landmark|registration|ventricular_short_axis|maisi|brain_image_synthesis", re.I)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class DownloadError(ModelError):
    """A bundle could not be fetched (network, server, or the server's answer)."""


def index_url(url: str | None = None) -> str:
    return url or os.environ.get("MEDSEG_ZOO_INDEX") or ZOO_INDEX_URL


def _open(url: str, what: str):
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT_S)  # noqa: S310 - http(s) URLs of the zoo index
    except urllib.error.HTTPError as e:
        raise DownloadError(f"{what}: the server answered {e.code} {e.reason} for {url}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"{what}: cannot reach {url} ({reason}). Check the network connection (or proxy); offline, download "
            "the bundle zip elsewhere and pass its path with --model PATH"
        ) from e


def _version_key(v: str):
    parts = re.findall(r"\d+|[A-Za-z]+", v)
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


def zoo_index(url: str | None = None) -> dict[str, dict[str, dict]]:
    """``{name: {version: {"source": url, "checksum": hex}}}`` from the zoo's ``model_info.json``."""
    url = index_url(url)
    with _open(url, "MONAI Model Zoo index") as resp:
        try:
            raw = json.loads(resp.read(32 << 20).decode("utf-8"))
        except (ValueError, OSError) as e:
            raise DownloadError(f"MONAI Model Zoo index {url}: not a JSON index ({e})") from e
    if not isinstance(raw, dict):
        raise DownloadError(f"MONAI Model Zoo index {url}: expected a mapping of bundle_vX.Y.Z to sources")
    out: dict[str, dict[str, dict]] = {}
    for key, info in raw.items():
        m = re.match(r"^(.+?)_v(\d[\w.]*)$", str(key))  # the split monai.bundle's _get_all_bundles_info does
        if not m or not isinstance(info, dict) or not isinstance(info.get("source"), str):
            continue
        out.setdefault(m.group(1), {})[m.group(2)] = {"source": info["source"], "checksum": info.get("checksum")}
    return out


def is_3d_segmentation(name: str) -> bool:
    return (name in _SEG_3D_EXTRA or "segmentation" in name.lower()) and not _NOT_3D_SEG.search(name)


def list_zoo_bundles(url: str | None = None, segmentation_only: bool = True) -> list[dict]:
    """One dict per bundle: name, latest version, all versions (oldest first); 3D segmentation ones by default."""
    rows = []
    for name, versions in sorted(zoo_index(url).items(), key=lambda kv: kv[0].lower()):
        if segmentation_only and not is_3d_segmentation(name):
            continue
        vs = sorted(versions, key=_version_key)
        rows.append({"name": name, "latest": vs[-1], "versions": vs})
    return rows


def _hash_type(checksum: str) -> str | None:
    return {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}.get(len(checksum or ""))


def pull_steps(name: str, version: str | None = None, url: str | None = None, force: bool = False):
    """Step generator of `pull_model` (yields download `Progress` in bytes, returns the stored path)."""
    from napari_medseg._atomic import temp_dir_beside
    from napari_medseg.models.registry import models_dir

    if not _NAME_RE.match(str(name)) or ".." in str(name):
        raise ModelError(f"{name!r} is not a bundle name (letters, digits, _ . -)")
    yield Progress(0, 1, "index", "reading the MONAI Model Zoo index")
    index = zoo_index(url)
    if name not in index:
        close = [n for n in index if n.lower() == str(name).lower() or str(name).lower() in n.lower()][:5]
        raise ModelError(f"no bundle {name!r} in the MONAI Model Zoo index ({index_url(url)})"
                         + (f"; did you mean {', '.join(close)}?" if close else ""))
    versions = index[name]
    version = version or sorted(versions, key=_version_key)[-1]
    if version not in versions:
        raise ModelError(f"bundle {name!r} has no version {version!r}; available: "
                         f"{', '.join(sorted(versions, key=_version_key))}")
    info = versions[version]
    dest = models_dir() / name / f"{version}.zip"
    if dest.exists() and not force:
        yield Progress(1, 1, "done", f"{name} {version} is already in the models home")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = temp_dir_beside(dest, f".{name}-{version}.")
    tmp = tmp_dir / dest.name
    try:
        with _open(info["source"], f"bundle {name} {version}") as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            with open(tmp, "wb") as f:
                while True:
                    try:
                        chunk = resp.read(CHUNK)
                    except (OSError, ValueError) as e:
                        raise DownloadError(f"bundle {name} {version}: the connection broke after {done} bytes "
                                            f"({e}); nothing was kept, try again") from e
                    if not chunk:
                        break
                    f.write(chunk)
                    done += len(chunk)
                    yield Progress(done, max(total, done), "download", f"{name} {version}")
        if total and done != total:
            raise DownloadError(f"bundle {name} {version}: the connection broke after {done} of {total} bytes; "
                                "nothing was kept, try again")
        _verify(tmp, info.get("checksum"), name, version)
        _check_bundle_zip(tmp, name, version)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    from napari_medseg.models.registry import active_version

    if not (models_dir() / name / "active").is_file() or active_version(name) is None:
        from napari_medseg.training.versions import activate

        activate(name, version)
    yield Progress(1, 1, "done", f"{name} {version} stored in {dest}")
    return dest


def _verify(path: Path, checksum, name: str, version: str) -> None:
    from monai.apps.utils import check_hash

    kind = _hash_type(checksum) if isinstance(checksum, str) else None
    if kind is None:
        return  # the zoo publishes no hash for it: bundle_card / load_bundle still check the contents
    if not check_hash(path, checksum.lower(), kind):
        raise IntegrityError(f"bundle {name} {version}: the download does not match the zoo's published {kind} "
                             f"{checksum[:12]}…; it was corrupted or tampered with and was not kept")


def _check_bundle_zip(path: Path, name: str, version: str) -> None:
    from napari_medseg.models.bundle import bundle_card

    try:
        with zipfile.ZipFile(path) as zf:
            bad = [n for n in zf.namelist() if n.startswith("/") or ".." in n.split("/")]
            if bad:
                raise ModelError(f"bundle {name} {version}: unsafe member path {bad[0]!r} in the zip")
    except zipfile.BadZipFile as e:
        raise DownloadError(f"bundle {name} {version}: the download is not a zip ({e})") from e
    bundle_card(path)  # refuses bundles napari-medseg cannot run, before they are stored


def pull_model(name: str, version: str | None = None, url: str | None = None, force: bool = False,
               progress=None, cancel=None) -> Path:
    """Download MONAI Model Zoo bundle ``name`` (latest or ``version``) into the models home; return its path.

    ``url``: the zoo index (default ``$MEDSEG_ZOO_INDEX`` or the zoo on GitHub). ``progress(Progress)`` gets
    bytes done/total; ``cancel()`` returning True stops the download (`CancelledError`) and removes the
    partial file. Afterwards ``load_model(name)`` / ``segment(..., model=name)`` use it.
    """
    try:
        return run_steps(pull_steps(name, version, url, force), progress, cancel)
    except CancelledError:
        raise CancelledError(f"download of {name} cancelled; the partial file was removed") from None
