"""Output folders that appear complete or not at all, and folder listings for error messages."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def describe_contents(folder: Path, limit: int = 12) -> str:
    """A short, sorted list of what a folder holds, for 'this is not a checkpoint' messages."""
    return ", ".join(sorted(p.name for p in folder.iterdir())[:limit]) or "nothing"


def usual_permissions(folder: Path) -> None:
    # mkdtemp (and safetensors) create owner-only files; give the result the permissions of
    # anything else this process writes.
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


@contextmanager
def staged_folder(out_dir: Path, label: str = "partial", replace: bool = False) -> Iterator[Path]:
    """Fill a hidden sibling folder; when the block ends without error it becomes `out_dir`.

    An error (or a crash) leaves no `out_dir`; at worst a crash leaves `.NAME.LABEL-*`, safe to
    delete. `out_dir` may already exist only empty, or with anything in it when `replace` is set.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{label}-", dir=out_dir.parent))
    try:
        yield staging
        usual_permissions(staging)
        if out_dir.exists():
            shutil.rmtree(out_dir) if replace else out_dir.rmdir()  # rename cannot replace a folder
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
