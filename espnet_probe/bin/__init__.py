"""The command-line tools: ``python -m espnet_probe.bin.<tool>``.

Garbage collection in a tool: importing torch and ESPnet makes millions of long-lived objects,
and every full collection walks them all.  A probe training ran 7 full collections (0.9 CPU-s)
that freed 57 objects; probe_decode spent 3.2 CPU-s with them and 2.5 s without.  So full
collections run a tenth as often (after 100 collections of the middle generation instead of 10;
the young generations, where nearly all cyclic garbage dies, are unchanged: same peak memory),
and at exit the objects are frozen so that the interpreter's last collections skip them
(0.5-0.8 CPU-s a job; registered first, it runs after every other exit handler).

YAML: ESPnet's own reads of a config go through libyaml as ours do (utils/yaml_io.py).
"""

import atexit
import gc

from espnet_probe.utils.yaml_io import safe_load_through_libyaml

FULL_COLLECTION_EVERY = 100  # middle-generation collections (Python's default: 10)

gc.set_threshold(*gc.get_threshold()[:2], FULL_COLLECTION_EVERY)
atexit.register(gc.freeze)
safe_load_through_libyaml()
