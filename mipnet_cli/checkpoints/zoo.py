"""The model zoo: named checkpoints (weights/zoo.json), the local cache, downloads and hashes."""

from __future__ import annotations

import json
import os
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import MipnetError
from ..core.files import atomic_path
from .format import import_checkpoint, save_checkpoint, sha256_of

WEIGHTS_DIR = Path(
    os.environ.get("MIPNET_WEIGHTS_DIR", Path(__file__).resolve().parents[2] / "weights"))


def cache_dir() -> Path:
    """Where pulled weights live: $MIPNET_CACHE, else ~/.cache/mipnet."""
    root = os.environ.get("MIPNET_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mipnet"
    return Path(root)


@dataclass(frozen=True)
class ZooEntry:
    """One named checkpoint of weights/zoo.json."""

    name: str
    kind: str  # "pose" | "detector"
    description: str = ""
    url: str | None = None
    sha256: str | None = None
    hash_prefix: str | None = None
    file: str | None = None  # shipped in weights/
    filename: str | None = None  # expected download name when there is no URL
    manual: str | None = None
    format: str = "mipnet"
    arch: str | None = None
    input_size: tuple[int, int] | None = None
    keypoints: str = "coco"
    instances: int = 1
    torchvision: str | None = None
    builder: str | None = None
    trained_on: str | None = None
    default: bool = False
    demo: bool = False  # trained on synthetic scenes only

    @property
    def download_name(self) -> str:
        if self.filename:
            return self.filename
        if self.url:
            return self.url.rsplit("/", 1)[-1]
        return f"{self.name}.pth"

    @property
    def converted_path(self) -> Path:
        """Our-format file of a pulled pose checkpoint."""
        return cache_dir() / f"{self.name}.safetensors"

    @property
    def shipped_path(self) -> Path | None:
        return WEIGHTS_DIR / self.file if self.file else None

    def local_path(self) -> Path | None:
        """The file to load, if it is on this machine."""
        for p in (self.shipped_path, self.converted_path):
            if p is not None and p.is_file():
                return p
        return None

    def status(self) -> str:
        if self.shipped_path is not None:
            return "shipped" if self.shipped_path.is_file() else "missing from weights/"
        if self.kind == "detector":
            return "torchvision cache"
        if self.converted_path.is_file():
            return "cached"
        return "manual download" if self.manual else "not downloaded"


def load_zoo(path: Path | None = None) -> dict[str, ZooEntry]:
    """All entries of the zoo file, by name."""
    path = path or WEIGHTS_DIR / "zoo.json"
    try:
        raw = json.loads(Path(path).read_text())["weights"]
    except (OSError, ValueError, KeyError) as exc:
        raise MipnetError(f"{path}: cannot read the model-zoo list ({exc})") from None
    zoo = {}
    for name, fields in raw.items():
        fields = dict(fields)
        if "input_size" in fields:
            fields["input_size"] = tuple(fields["input_size"])
        zoo[name] = ZooEntry(name=name, **fields)
    return zoo


def get_entry(name: str) -> ZooEntry:
    zoo = load_zoo()
    if name not in zoo:
        raise MipnetError(f"unknown weights {name!r}; `mipnet weights list` shows the names")
    return zoo[name]


def default_entry(kind: str, min_instances: int = 1) -> ZooEntry | None:
    """The zoo's default entry of a kind; with `min_instances` > 1, the default among the
    shipped pose models with at least that many instances."""
    entries = [e for e in load_zoo().values() if e.kind == kind]
    if min_instances <= 1:
        return next((e for e in entries if e.default), None)
    multi = [e for e in entries if e.instances >= min_instances and e.shipped_path is not None]
    return next((e for e in multi if e.default), multi[0] if multi else None)


def shipped_detector(builder: str) -> ZooEntry | None:
    """The zoo detector shipped in weights/ for a builder name, if any."""
    return next((e for e in load_zoo().values() if e.kind == "detector" and e.builder == builder
                 and e.shipped_path is not None and e.shipped_path.is_file()), None)


def verify_hash(path: Path, entry: ZooEntry) -> None:
    """Check a downloaded file against the entry's sha256 or sha256 prefix."""
    expected = entry.sha256 or entry.hash_prefix
    if not expected:
        return
    digest = sha256_of(path)
    if not digest.startswith(expected):
        raise MipnetError(
            f"{path}: sha256 {digest[:16]}… does not match the expected {expected} for "
            f"{entry.name}; delete the file and download it again")


def _download(url: str, dest: Path) -> None:
    from torch.hub import download_url_to_file

    with atomic_path(dest, suffix=".part") as tmp:
        download_url_to_file(url, str(tmp), progress=True)


def pull(name: str) -> Path:
    """Make a named pose checkpoint available locally in our format; return its path (for a
    shipped detector, its file).

    A file already downloaded by hand into the cache (under the entry's download name) is used
    instead of downloading.
    """
    entry = get_entry(name)
    if entry.kind != "pose" and entry.shipped_path is not None and entry.shipped_path.is_file():
        return entry.shipped_path
    if entry.kind != "pose":
        raise MipnetError(
            f"{name} is a {entry.kind}; torchvision fetches it itself on first use "
            f"(or pass --detector-weights PATH)")
    local = entry.local_path()
    if local is not None:
        return local
    raw = cache_dir() / entry.download_name
    if not raw.is_file():
        if not entry.url:
            raise MipnetError(f"{name} has no direct download. {entry.manual or ''} "
                              f"Cache folder: {cache_dir()}")
        try:
            _download(entry.url, raw)
        except (urllib.error.URLError, OSError, RuntimeError) as exc:
            raise MipnetError(
                f"cannot download {entry.url} ({getattr(exc, 'reason', exc)}). Offline? Download "
                f"it by hand on a connected machine and save it as {raw}, then run "
                f"`mipnet weights pull {name}` again") from None
    verify_hash(raw, entry)
    model, meta = import_checkpoint(raw, arch=entry.arch, image_size=entry.input_size,
                                    keypoints=entry.keypoints)
    meta.provenance["zoo_name"] = name
    meta.provenance["description"] = entry.description
    save_checkpoint(entry.converted_path, model, meta.keypoints, meta.provenance)
    return entry.converted_path


def resolve_scorer_weights(spec: str | None) -> Path:
    """The single-stage checkpoint that scores poses (--rescore psm): a path or zoo name, or
    None for the shipped single-stage model."""
    if spec is not None:
        return resolve_pose_weights(spec)
    from ..models import ARCHITECTURES

    for entry in load_zoo().values():
        base = ARCHITECTURES.get(entry.arch)
        if (entry.kind == "pose" and base is not None and base[0].arch == "pfs"
                and entry.local_path() is not None):
            return entry.local_path()
    raise MipnetError("--rescore psm: no single-stage (pfs) checkpoint ships in weights/; "
                      "train one (configs/pfs_nano.toml) and pass --scorer FILE")


RECOVERY_DEFAULT = "movenet-multipose-coco"


def resolve_recovery_weights(spec: str | None) -> Path:
    """The whole-image checkpoint of crowd recovery (--recover): a path or zoo name, or None
    for the shipped MoveNet MultiPose."""
    return resolve_pose_weights(RECOVERY_DEFAULT if spec is None else spec)


def resolve_pose_weights(spec: str | None, min_instances: int = 1) -> Path:
    """A pose checkpoint path from a file path, a zoo name, or None (the shipped default; with
    `min_instances` > 1 the shipped default with that many instances)."""
    if spec is None:
        entry = default_entry("pose", min_instances)
        if entry is None or entry.local_path() is None:
            raise MipnetError(
                "no pose weights given and no shipped default in weights/; pass --weights "
                "FILE or a name from `mipnet weights list`")
        return entry.local_path()
    path = Path(spec)
    if path.exists():
        return path
    zoo = load_zoo()
    if spec in zoo:
        local = zoo[spec].local_path()
        if local is None:
            raise MipnetError(
                f"weights {spec} are not downloaded yet: run `mipnet weights pull {spec}`")
        return local
    raise MipnetError(f"{spec}: no such file, and not a name in `mipnet weights list`")
