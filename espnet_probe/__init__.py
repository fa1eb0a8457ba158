"""espnet-probe: per-layer resynthesis probes for ESPnet CTC encoders."""

from espnet_probe.asr.s3prl_offline import s3prl_import_hooks
from espnet_probe.asr.whisper_offline import local_whisper_weights
from espnet_probe.utils.offline import (defer_unused_espnet_imports, quiet_flash_attention_notice,
                                        skip_g2p_downloads)

__version__ = "0.1.0"

skip_g2p_downloads()
quiet_flash_attention_notice()
defer_unused_espnet_imports()
local_whisper_weights()
s3prl_import_hooks()
