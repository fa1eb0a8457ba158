"""No network at import: ESPnet's text package imports g2p_en, which calls nltk.download() for
its POS tagger and CMUdict the moment it is imported.  Offline that is a refused connection
and eight ``[nltk_data] Error loading ...`` lines in every process and log.  This project
tokenises into characters or BPE and never calls g2p, so those two downloads are skipped
(g2p_en itself would still fail loudly if someone used it without the data).

The hook costs nothing until g2p_en is imported (importing nltk alone takes seconds).
"""

from __future__ import annotations

import importlib.abc
import sys

G2P_RESOURCES = {"averaged_perceptron_tagger_eng", "cmudict"}


class _SkipG2PDownloads(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "g2p_en":
            sys.meta_path.remove(self)
            import nltk

            download = nltk.download

            def download_except_g2p(info_or_id=None, *args, **kwargs):
                if info_or_id in G2P_RESOURCES:
                    return False
                return download(info_or_id, *args, **kwargs)

            nltk.download = download_except_g2p
        return None  # the normal import machinery finds the module


def skip_g2p_downloads() -> None:
    if "g2p_en" not in sys.modules and not any(isinstance(f, _SkipG2PDownloads) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipG2PDownloads())
