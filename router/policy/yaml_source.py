"""Parsing policy, preset and test YAML: libyaml's C parser when installed (several times
faster, which matters when what-if or the admin API compile many drafts), else PyYAML's own.
Both are safe loaders: plain mappings, lists and scalars only."""

from __future__ import annotations

from typing import Any

import yaml

SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

YAMLError = yaml.YAMLError


def safe_load(text: str) -> Any:
    return yaml.load(text, Loader=SafeLoader)
