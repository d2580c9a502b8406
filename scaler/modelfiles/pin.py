"""ModelFilePin: which file of which Hugging Face repo, at which commit, with which sha256.

One pin per model (``manifests/model-files/pins/<model>.yaml``) is the single source of truth
for the weights a model serves: the fetch Job reads it, the docs table is checked against it.
A pin is a YAML document with ``kind: ModelFile``, validated strictly (camelCase keys,
unknown keys are errors). The figures must be real: a revision is a full commit hash (never a
branch such as ``main``, which moves), a sha256 is 64 hex digits and not a placeholder (one
repeated digit such as all zeros). ``fetch-model`` refuses to run with anything else, so an
unverified figure cannot slip into a cluster as if it were checked.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

PIN_KIND = "ModelFile"

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class PinError(Exception):
    """A pin file that cannot be used: unreadable, malformed, or holding placeholder figures."""


class ModelFilePin(BaseModel):
    """One model's weights file on the Hugging Face Hub, pinned by commit, size and sha256."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, strict=True
    )

    kind: Literal["ModelFile"]
    model: str  # the policy name (policies/<model>.yaml)
    repo: str  # "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF"
    revision: str  # a commit of that repo, 40 hex digits
    file: str  # path of the file in the repo, also its name under the models volume
    size_bytes: Annotated[int, Field(gt=0)]
    sha256: str  # the Git LFS oid: sha256 of the file's content
    sources: Annotated[tuple[str, ...], Field(min_length=1)]  # public pages quoting the figures

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not _DNS_LABEL.match(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a model name (lowercase RFC 1123 label)")
        return value

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not _REPO.match(value):
            raise ValueError(f"{value!r} is not a Hub repo id (owner/name)")
        return value

    @field_validator("revision", "sha256", mode="before")
    @classmethod
    def _not_a_number(cls, value: object) -> object:
        # Unquoted YAML turns 000…0 into the integer 0: say what that is, not "not a string".
        if isinstance(value, int | float):
            raise ValueError(f"{value!r} is a number, a placeholder: write the hex digits")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        if not _COMMIT.match(value):
            raise ValueError(
                f"{value!r} is not a commit: pin a full commit hash (40 lowercase hex digits); "
                "a branch or tag can move under the same name"
            )
        if _repeated(value):
            raise ValueError(f"{value!r} is a placeholder, not a commit of the repo")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError(f"{value!r} is not a sha256 (64 lowercase hex digits)")
        if _repeated(value):
            raise ValueError(
                f"{value!r} is a placeholder: put the file's Git LFS sha256 from a public "
                "source here, or leave the model without a pin"
            )
        return value

    @field_validator("file")
    @classmethod
    def _file(cls, value: str) -> str:
        # The file lands directly under the models volume: no directories, no hidden files
        # (the fetch keeps its partial downloads in a hidden folder there).
        if "/" in value or value.startswith(".") or not value:
            raise ValueError(f"{value!r} must be a plain file name (no '/', not hidden)")
        return value

    @field_validator("sources", mode="before")
    @classmethod
    def _sources(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("sources")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith("https://"):
                raise ValueError(f"{url!r} is not an https:// URL")
        return value


def _repeated(value: str) -> bool:
    """One character repeated (000…, fff…): what a placeholder looks like."""
    return len(set(value)) == 1


def parse_pin(text: str, source: str = "<string>") -> ModelFilePin:
    """A pin from YAML text; `source` names it in error messages."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PinError(f"{source}: not YAML: {exc}") from None
    if not isinstance(document, dict):
        raise PinError(f"{source}: expected a mapping with kind: {PIN_KIND}")
    try:
        return ModelFilePin.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(document)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise PinError(f"{source}: {problems}") from None


def load_pin(path: Path) -> ModelFilePin:
    """Read and validate one pin file; PinError says which file and which field is wrong."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise PinError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_pin(text, str(path))
