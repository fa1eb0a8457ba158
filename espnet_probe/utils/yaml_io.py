"""YAML reading through libyaml when PyYAML was built with it.

An ESPnet config.yaml carries its token list inline: Whisper's is 50,257 entries (0.6 MB), which
PyYAML's pure-Python parser reads in 1.7 s and libyaml in 0.19 s, and every job that loads a
model reads its config once or twice.  The values are the same either way: both loaders build
them with PyYAML's safe constructor, so no tag can construct an arbitrary object.

ESPnet reads the same file with ``yaml.safe_load`` (``build_model_from_file``, behind every
Speech2Text and every model our jobs load): a tool sends that through libyaml too
(``espnet_probe/bin/__init__.py``); importing espnet_probe as a library leaves PyYAML as it is.
"""

from __future__ import annotations

import yaml

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(stream):
    """``yaml.safe_load``, through libyaml when available (a str or an open file)."""
    return yaml.load(stream, Loader=_SAFE_LOADER)


def safe_load_through_libyaml() -> None:
    """Make ``yaml.safe_load`` :func:`load_yaml` in this process (a tool's)."""
    yaml.safe_load = load_yaml
