"""Find a source checkpoint and check it against models/weights_manifest.toml before it is used.

    python -m models.export.weights PATH [PATH ...]   # print size and sha256 in manifest form

A file whose size or sha256 differs from the manifest raises WeightsMismatchError: a truncated download or
a different release must never be exported silently. Values the manifest leaves unknown (size 0, sha256 "")
are not checked; the strict state-dict loading of the exporters still rejects a wrong checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MANIFEST = Path(__file__).resolve().parents[1] / "weights_manifest.toml"


class WeightsMismatchError(RuntimeError):
    """A weight file exists but is not the one the manifest describes."""


@dataclass(frozen=True)
class WeightSpec:
    """One table of the manifest. size 0 / sha256 "" mean unknown (not checked)."""

    name: str
    file: str
    size: int
    sha256: str
    source: str
    licence: str


def load_manifest(manifest: Path = DEFAULT_MANIFEST) -> dict[str, WeightSpec]:
    """Parse the manifest into {table name: WeightSpec}."""
    with Path(manifest).open("rb") as handle:
        tables = tomllib.load(handle)
    specs = {}
    for name, table in tables.items():
        specs[name] = WeightSpec(
            name=name,
            file=str(table["file"]),
            size=int(table.get("size", 0)),
            sha256=str(table.get("sha256", "")).lower(),
            source=str(table.get("source", "")),
            licence=str(table.get("licence", "")),
        )
    return specs


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def get_weight_spec(name: str, manifest: Path = DEFAULT_MANIFEST) -> WeightSpec:
    """The manifest entry whose table name or file name is `name`; KeyError listing the known ones."""
    specs = load_manifest(manifest)
    if name in specs:
        return specs[name]
    for spec in specs.values():
        if spec.file == name:
            return spec
    known = ", ".join(f"{s.name} ({s.file})" for s in specs.values())
    raise KeyError(f"'{name}' is not in {manifest} (known: {known})")


def find_weights(name: str, weights_dir: Path, manifest: Path = DEFAULT_MANIFEST) -> Path | None:
    """Path of the weight file `name` (table or file name) in `weights_dir` once checked; None when absent.

    Raises WeightsMismatchError when the file's size, or its sha256 where the manifest knows it, differs.
    """
    spec = get_weight_spec(name, manifest)
    path = Path(weights_dir) / spec.file
    if not path.exists():
        return None
    if not path.is_file():
        raise WeightsMismatchError(f"{path} is not a regular file")
    size = path.stat().st_size
    if spec.size and size != spec.size:
        raise WeightsMismatchError(
            f"{path} has {size} bytes, the manifest expects {spec.size} (source: {spec.source}); "
            "the file is truncated or another release: replace it"
        )
    if spec.sha256:
        digest = sha256_of(path)
        if digest != spec.sha256:
            raise WeightsMismatchError(
                f"{path} has sha256 {digest}, the manifest expects {spec.sha256} (source: {spec.source}); "
                "the file is corrupt or another release: replace it"
            )
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print size and sha256 of weight files in manifest form")
    parser.add_argument("paths", type=Path, nargs="+")
    for path in parser.parse_args(argv).paths:
        print(f'# {path}\nfile = "{path.name}"\nsize = {path.stat().st_size}\nsha256 = "{sha256_of(path)}"')


if __name__ == "__main__":
    main()
