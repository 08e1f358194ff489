"""Model references: where a model lives when it is not a local path.

``hf://ORG/NAME[@REVISION][/SUB/PATH]`` names a Hugging Face repository (a branch, tag or commit;
a subfolder or one file of it); ``https://`` and ``http://`` URLs name one ``.safetensors``,
``.safetensors.index.json`` or ``.gguf`` file. Anything else is a local path and is left alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from os import PathLike
from urllib.parse import unquote, urlsplit

from tensorguard.errors import TensorguardError

HF_SCHEME = "hf://"
_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_HF_RE = re.compile(rf"^(?P<org>{_PART})/(?P<name>{_PART})(?:@(?P<rev>[^/]+(?:/pr/\d+)?))?"
                    r"(?:/(?P<sub>.*))?$")
#: The file types a URL may name (a URL names one file; its siblings are found from it).
URL_SUFFIXES = (".safetensors", ".safetensors.index.json", ".gguf")
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class HubReference:
    """A repository on the Hub (``repo_id`` = ``ORG/NAME``), at ``revision``, and a path in it."""

    repo_id: str
    revision: str
    subpath: str

    @property
    def name(self) -> str:
        return self.repo_id.split("/")[1]

    def pinned(self, commit: str) -> str:
        """The reference at ``commit``: what results and catalogue entries record."""
        return f"{HF_SCHEME}{self.repo_id}@{commit}" + (f"/{self.subpath}" if self.subpath else "")

    def __str__(self) -> str:
        rev = "" if self.revision == DEFAULT_REVISION else f"@{self.revision}"
        return f"{HF_SCHEME}{self.repo_id}{rev}" + (f"/{self.subpath}" if self.subpath else "")


@dataclass(frozen=True)
class UrlReference:
    """One model file at an ``http(s)://`` address."""

    url: str

    @property
    def filename(self) -> str:
        return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])

    @property
    def folder(self) -> str:
        """The name of the folder the file sits in (what a local model folder would be named)."""
        parts = [p for p in urlsplit(self.url).path.split("/")[:-1] if p]
        return unquote(parts[-1]) if parts else urlsplit(self.url).hostname or "model"

    def __str__(self) -> str:
        return self.url


Reference = HubReference | UrlReference


def is_reference(model: object) -> bool:
    """Whether ``model`` is a string naming a remote model (``hf://`` or ``http(s)://``)."""
    return isinstance(model, str) and model.lower().startswith((HF_SCHEME, "https://", "http://"))


def parse_reference(model: str | PathLike[str]) -> Reference | None:
    """The reference ``model`` spells, or ``None`` for a local path; a malformed reference is
    refused with a one-line error saying what the form is."""
    if not is_reference(model):
        return None
    text = str(model)
    if text.lower().startswith(HF_SCHEME):
        match = _HF_RE.match(text[len(HF_SCHEME):])
        sub = (match["sub"] or "").strip("/") if match else ""
        if match is None or (any(p in ("", ".", "..") for p in sub.split("/")) and sub):
            raise TensorguardError(f"{text}: not a Hub reference (hf://ORG/NAME[@REVISION][/PATH])")
        return HubReference(f"{match['org']}/{match['name']}", match["rev"] or DEFAULT_REVISION, sub)
    parts = urlsplit(text)
    if not parts.hostname:
        raise TensorguardError(f"{text}: not a URL (no host)")
    if not parts.path.endswith(URL_SUFFIXES):
        raise TensorguardError(f"{text}: a URL must name a {', '.join(URL_SUFFIXES)} file (use "
                               "hf://ORG/NAME for a Hub repository)")
    ref = UrlReference(text)
    if any(c in name for name in (ref.filename, ref.folder) for c in "/\\\0") \
            or ref.folder in (".", ".."):
        raise TensorguardError(f"{text}: the file or folder name is not a plain name")
    return ref
