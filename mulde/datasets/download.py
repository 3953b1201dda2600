"""Download and extract the public benchmarks that have a direct URL.

UCSD Ped1/Ped2 (one tarball) and CUHK Avenue (videos + ground truth zips) are public. The SHA-256
checksums are the ones published with anomalib's dataset loaders; a mismatch stops the
extraction. ShanghaiTech, UBnormal and UCF-Crime have no stable direct URL (cloud drives or
request forms): :func:`download_dataset` names the official page instead. Offline, the error
names the URL and where to put the file by hand; an archive already in ``dest`` is reused.
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

from tqdm.auto import tqdm

from mulde.atomic import atomic_path, atomic_write
from mulde.errors import DatasetError, InputError, MuldeError


@dataclass(frozen=True)
class Archive:
    url: str
    sha256: str | None  # None: not published; the download is then not verified


UCSD = Archive("http://www.svcl.ucsd.edu/projects/anomaly/UCSD_Anomaly_Dataset.tar.gz",
               "2329af326951f5097fdd114c50e853957d3e569493a49d22fc082a9fd791915b")
AVENUE = Archive("http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/Avenue_Dataset.zip",
                 "fc9cb8432a11ca79c18aa180c72524011411b69d3b0ff27c8816e41c0de61531")
AVENUE_GT = Archive(
    "http://www.cse.cuhk.edu.hk/leojia/projects/detectabnormal/ground_truth_demo.zip",
    "60fec1728ec8f73a58aad3aeb5729d70a805a47e0b8eb4bf91ab67ef06386d77")

SOURCES: dict[str, tuple[Archive, ...]] = {"ped1": (UCSD,), "ped2": (UCSD,),
                                           "avenue": (AVENUE, AVENUE_GT)}
OFFICIAL_PAGES = {
    "shanghaitech": "https://svip-lab.github.io/dataset/campus_dataset.html",
    "ubnormal": "https://github.com/lilygeorgescu/UBnormal",
    "ucfcrime": "https://www.crcv.ucf.edu/projects/real-world/",
}


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, target: Path, progress: bool, timeout: float) -> None:
    try:
        with atomic_path(target) as part, urlopen(url, timeout=timeout) as resp, part.open("wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name,
                      disable=not progress) as bar:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (URLError, TimeoutError, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MuldeError(f"cannot download {url} ({reason}); fetch it by hand, save it as "
                         f"{target}, and run the command again") from None


def _extract(archive: Path, dest: Path) -> None:
    dest_resolved = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if not (dest / name).resolve().is_relative_to(dest_resolved):
                        raise DatasetError(f"{archive}: unsafe path {name!r} in archive")
                zf.extractall(dest)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                for member in tf.getmembers():
                    if not (dest / member.name).resolve().is_relative_to(dest_resolved):
                        raise DatasetError(f"{archive}: unsafe path {member.name!r} in archive")
                tf.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                      else {}))
        else:
            raise DatasetError(f"{archive}: not a zip or tar archive; delete it and download again")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise DatasetError(f"{archive}: corrupt archive ({exc}); delete it and download "
                           "again") from None


def fetch_and_extract(url: str, dest: str | Path, sha256: str | None = None,
                      progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` into ``dest`` (reusing a file already there), verify, extract; return dest."""
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / Path(url.split("?", 1)[0]).name
    marker = dest / f".{target.name}.extracted"
    if marker.is_file():
        return dest
    if not target.is_file():
        _fetch(url, target, progress, timeout)
    if sha256:
        got = sha256_of(target)
        if got != sha256.lower():
            raise DatasetError(f"{target}: SHA-256 {got} does not match the published {sha256}; "
                               "delete the file and download it again")
    _extract(target, dest)
    atomic_write(marker, sha256 or "unverified\n")
    return dest


def download_dataset(name: str, dest: str | Path, progress: bool = True) -> Path:
    """Download and extract dataset ``name`` into ``dest``; return the folder to pass as root."""
    key = str(name).strip().lower()
    dest = Path(dest).expanduser()
    if key in OFFICIAL_PAGES:
        raise MuldeError(f"{key} has no public direct download; get it from "
                         f"{OFFICIAL_PAGES[key]} and pass its folder as --root")
    if key == "synthetic":
        from mulde.datasets.synthetic import generate_synthetic

        return generate_synthetic(dest)
    if key not in SOURCES:
        from mulde.datasets.registry import list_datasets

        if key in list_datasets():
            raise InputError(f"{key}: nothing to download (it is your own data)")
        raise InputError(f"unknown dataset {name!r}; choose one of: "
                         f"{', '.join([*SOURCES, *OFFICIAL_PAGES, 'synthetic'])}")
    for archive in SOURCES[key]:
        fetch_and_extract(archive.url, dest, archive.sha256, progress=progress)
    return dest

