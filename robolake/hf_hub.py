"""Datasets on the Hugging Face Hub as inputs: `hf://datasets/ORG/NAME[@REVISION]`.

A reference resolves once, through huggingface_hub, to an immutable commit, and only the
files a reader asks for (allow patterns) are downloaded into huggingface_hub's own cache
(HF_HUB_CACHE / HF_HOME; with HF_HUB_OFFLINE=1 the cache alone answers, refs/<branch>
naming the commit). What a reader then opens is the local snapshot folder of that commit."""

from __future__ import annotations

import os
from dataclasses import dataclass

from robolake.errors import RobolakeError

PREFIX = "hf://datasets/"
DEFAULT_REVISION = "main"


@dataclass(frozen=True)
class HubReference:
    """A dataset repository and the revision (commit, branch or tag) a spec names."""

    text: str
    repo_id: str
    revision: str
    pinned: bool  # the spec named the revision

    @property
    def name(self) -> str:
        """The dataset's name without its owner (an episode id prefix, as a local folder's name is)."""
        return self.repo_id.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ResolvedDataset:
    """A reference resolved: the commit and the local snapshot folder holding the files asked for."""

    reference: HubReference
    commit: str
    folder: str

    def record(self) -> dict:
        """What provenance and the manifest keep of it."""
        ref = self.reference
        return {"reference": ref.text, "repo_id": ref.repo_id, "revision": ref.revision, "commit": self.commit,
                "pinned": f"{PREFIX}{ref.repo_id}@{self.commit}"}


def parse(text: str) -> HubReference | None:
    """The reference a `source.paths` entry names, or None for a local path or another URL;
    RobolakeError for a malformed one."""
    if not text.startswith(PREFIX):
        return None
    repo, _, revision = text.removeprefix(PREFIX).partition("@")
    parts = repo.strip("/").split("/")
    if len(parts) != 2 or not all(parts) or (revision == "" and text.endswith("@")):
        raise RobolakeError(f"source.paths: {text!r} is not a Hub dataset reference; write "
                            f"hf://datasets/ORG/NAME or hf://datasets/ORG/NAME@REVISION")
    return HubReference(text, "/".join(parts), revision or DEFAULT_REVISION, bool(revision))


def path_in_dataset(reference: HubReference, path: str) -> str:
    """`NAME/<path inside the repository>` of a file in a snapshot folder
    (`.../datasets--ORG--NAME/snapshots/<commit>/<path>`)."""
    _, _, tail = path.partition("/snapshots/")
    return f"{reference.name}/{tail.partition('/')[2]}"


def resolve(reference: HubReference, allow_patterns: list[str]) -> ResolvedDataset:
    """Resolve the revision to its commit and fetch the files matching `allow_patterns`
    (those already in the cache are not fetched again); RobolakeError naming the reference
    where the Hub and the cache both fail."""
    from huggingface_hub import snapshot_download  # here: importing the Hub client is not free
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, HFValidationError

    try:
        folder = snapshot_download(reference.repo_id, repo_type="dataset", revision=reference.revision,
                                   allow_patterns=allow_patterns)
    except (EntryNotFoundError, HfHubHTTPError, HFValidationError, OSError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RobolakeError(f"source.paths: {reference.text}: cannot resolve or fetch revision "
                            f"{reference.revision!r} of dataset {reference.repo_id} from the Hub or the local cache "
                            f"({type(exc).__name__}: {first_line})") from None
    return ResolvedDataset(reference, os.path.basename(folder.rstrip("/")), folder)
