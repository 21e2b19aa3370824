"""The settings as the README's reference table (``stevedore_server.base.settings.reference()``; a test
keeps the two equal)."""

from __future__ import annotations

from dataclasses import fields

from .model import ModelSettings, Settings, env_name

#: Where a per-model setting comes from when its table does not set it, where not from the server's setting.
MODEL_FALLBACKS = {
    "max_batch_size": "the predictor's attribute",
    "max_batch_time": "the predictor's attribute",
    "inline_budget": "the server's `inline_budget` if the predictor declares `inline`, else 0",
    "max_concurrency": "the server's, or `processes` for a model in processes",
    "processes": "none: the model runs on the server's threads (1 where `python` is set)",
    "python": "the server's own interpreter",
    "replicas": "1",
    "min_replicas": "1, with autoscaling on",
    "max_replicas": "`min_replicas` (at least 1)",
    "target_ongoing_requests": "Serve's default (2)",
    "upscale_delay": "Serve's default (30)",
    "downscale_delay": "Serve's default (600)",
    "max_replicas_per_node": "no limit",
    "ray_actor_options": "`{num_cpus = 1}` (a table given is merged into it)",
    "uri": "none: the model is a plugin's, not a model file",
    "runtime": "the one installed runtime that claims `uri`",
    "version": "1",
    "sha256": "none: any content",
    "trust": "false (true everywhere with `allow_pickle`)",
    "output": "the runtime's (scikit-learn: predict)",
    "content_type": "the runtime's (np)",
    "predict_schema": "derived from the model file",
    "predict_fixture": "derived from the model file",
    "options": "none",
    "payload_log": "true: logged wherever the server's `payload_log` sends",
    "load": "the server's `model_load`",
    "pin": "false: unloaded to make room when least recently used",
    "cancel": "`finish`",
}


def reference() -> str:
    """The settings as a Markdown table, for the README (a test keeps the two equal)."""
    rows = ["| setting | flag | variable | default | meaning |", "|---|---|---|---|---|"]
    for item in fields(Settings):
        if item.metadata["file_only"]:
            continue
        flag = f"`--{item.name.replace('_', '-')}`" if item.metadata["flag"] else ""
        default = item.default if item.default not in (None, ()) else ""
        rows.append(f"| `{item.name}` | {flag} | `{env_name(item.name)}` | {default} | {item.metadata['help']} |")
    rows.append("")
    rows.append("Per model, in the file's `[models.NAME]` tables:")
    rows.append("")
    rows += ["| setting | when unset | meaning |", "|---|---|---|"]
    for item in fields(ModelSettings):
        fallback = MODEL_FALLBACKS.get(item.name, f"the server's `{item.name}`")
        rows.append(f"| `{item.name}` | {fallback} | {item.metadata['help']} |")
    return "\n".join(rows) + "\n"
