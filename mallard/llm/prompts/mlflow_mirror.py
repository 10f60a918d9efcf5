"""Mallard's prompt versions and labels, mirrored into MLflow's prompt registry.

Mallard's registry stays the source of truth (versions are immutable, a label moves only by a
recorded promote or rollback); MLflow gets a copy where its users look: each version becomes an
MLflow prompt version of the same name, registered in Mallard's order so that the numbers agree,
and each label becomes the alias of the same name (`live`, `staging`) on the same version. A
version carries its Mallard number and content hash as tags, so a mirror finding MLflow's
numbering different (a version registered there by hand) maps through those tags instead.

`mirror_prompts` is idempotent: it registers what MLflow lacks and points every alias where
Mallard's label points. The prompt_versions asset runs it after each sync, the promotion gate
after each decision, and the registry after every label move (`on_label_move`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mallard.llm.prompts.template import PLACEHOLDER

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mallard.llm.prompts.registry import LabelEvent, PromptRegistry, PromptVersion

log = logging.getLogger(__name__)

VERSION_TAG = "mallard.version"
HASH_TAG = "mallard.content_hash"
SOURCE_TAG = "mallard.source"
# MLflow lists a prompt under an experiment's Prompts tab when its id is in this prompt tag.
EXPERIMENT_IDS_TAG = "_mlflow_experiment_ids"


@dataclass
class MirroredPrompt:
    """What one prompt looks like in MLflow after mirroring."""

    name: str
    versions: dict[int, int] = field(default_factory=dict)  # Mallard version → MLflow version
    registered: list[int] = field(default_factory=list)  # Mallard versions registered just now
    aliases: dict[str, int] = field(default_factory=dict)  # alias → MLflow version


def mlflow_template(version: PromptVersion) -> list[dict[str, str]]:
    """The version's chat messages with MLflow's `{{name}}` placeholders."""
    return [
        {"role": role, "content": PLACEHOLDER.sub(lambda m: "{{" + m.group(1) + "}}", content)}
        for role, content in version.template.messages
    ]


def _model_config(version: PromptVersion) -> dict[str, Any] | None:
    model = dict(version.template.model)
    if not model:
        return None
    known = {"temperature", "max_tokens", "top_p", "top_k", "frequency_penalty", "presence_penalty"}
    config: dict[str, Any] = {k: v for k, v in model.items() if k in known}
    if model.get("endpoint"):
        config["model_name"] = str(model["endpoint"])
    extra = {k: v for k, v in model.items() if k not in known and k != "endpoint"}
    if extra:
        config["extra_params"] = extra
    return config


def _mlflow_versions(c: MlflowClient, name: str) -> dict[int, int]:
    """Mallard version → MLflow version for the prompt's versions already in MLflow."""
    if c.get_prompt(name) is None:
        return {}
    found: dict[int, int] = {}
    token = None
    while True:
        page = c.search_prompt_versions(name, max_results=100, page_token=token)
        for pv in page:
            tag = pv.tags.get(VERSION_TAG)
            if tag is not None and tag.isdigit():
                found[int(tag)] = int(pv.version)
        token = page.token
        if not token:
            return found


def mirror_prompt(
    registry: PromptRegistry, c: MlflowClient, name: str, experiment_id: str | None = None
) -> MirroredPrompt:
    """Register the versions of `name` MLflow lacks and move its aliases to Mallard's labels."""
    mirrored = MirroredPrompt(name, _mlflow_versions(c, name))
    for version in registry.versions(name):
        if version.version in mirrored.versions:
            continue
        created = c.register_prompt(
            name,
            template=mlflow_template(version),
            commit_message=version.template.description or f"Mallard version {version.version}",
            tags={
                VERSION_TAG: str(version.version),
                HASH_TAG: version.content_hash,
                SOURCE_TAG: version.source or "",
                "mallard.created_by": version.created_by,
                "mallard.created_at": version.created_at,
            },
            model_config=_model_config(version),
        )
        mirrored.versions[version.version] = int(created.version)
        mirrored.registered.append(version.version)
    for label, version_number in registry.labels(name).items():
        target = mirrored.versions.get(version_number)
        if target is None:
            continue
        c.set_prompt_alias(name, label, target)
        mirrored.aliases[label] = target
    if experiment_id is not None:
        link_to_experiment(c, name, experiment_id)
    return mirrored


def link_to_experiment(c: MlflowClient, name: str, experiment_id: str) -> None:
    """List the prompt in the experiment's Prompts tab (MLflow's own tag for it)."""
    prompt = c.get_prompt(name)
    if prompt is None:
        return
    ids = [i for i in prompt.tags.get(EXPERIMENT_IDS_TAG, "").split(",") if i]
    if experiment_id not in ids:
        c.set_prompt_tag(name, EXPERIMENT_IDS_TAG, "," + ",".join([*ids, experiment_id]) + ",")


def mirror_prompts(
    registry: PromptRegistry,
    settings: Any,
    names: Iterable[str] | None = None,
    experiment_id: str | None = None,
) -> list[MirroredPrompt]:
    """Mirror every prompt of the registry (or `names`) into the MLflow store of `settings`."""
    from mallard.models.registry import client

    c = client(settings)
    return [
        mirror_prompt(registry, c, name, experiment_id)
        for name in (registry.names() if names is None else names)
    ]


def prompt_url(ui: str, name: str, mlflow_version: int | None = None) -> str:
    """The prompt's page in the MLflow UI (`ui`: its address)."""
    return f"{ui.rstrip('/')}/#/prompts/{name}" + (
        f"?promptVersion={mlflow_version}" if mlflow_version is not None else ""
    )


def store_in_use(settings: Any) -> bool:
    """Whether MALLARD_HOME's MLflow store exists (or is a server): a label move is mirrored
    there, and never creates a store of its own."""
    uri = str(settings.mlflow_tracking_uri)
    if not uri.startswith("sqlite:///"):
        return True
    from pathlib import Path

    return Path(uri[len("sqlite:///") :]).exists()


def label_mirror(registry_settings: Any) -> Callable[[PromptRegistry, LabelEvent], None]:
    """A registry's `on_label_move`: mirror the moved prompt into MLflow if its store is in use.

    A failure is logged, never raised: the move is already recorded in Mallard, and the next
    mirror (the prompt_versions asset, the gate, another move) brings MLflow up to date."""

    def on_label_move(registry: PromptRegistry, event: LabelEvent) -> None:
        if not store_in_use(registry_settings):
            return
        try:
            mirror_prompts(registry, registry_settings, [event.name])
        except Exception as exc:  # noqa: BLE001 - MLflow is a mirror; Mallard has the move
            log.warning(
                "could not mirror %s@%s → v%s into MLflow's prompt registry: %s",
                event.name,
                event.label,
                event.to_version,
                exc,
            )

    return on_label_move
