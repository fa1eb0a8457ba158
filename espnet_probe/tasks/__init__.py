"""ESPnet tasks of espnet-probe."""
