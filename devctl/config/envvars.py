"""The environment variables devctl reads that are not config keys.

The environment names of config keys (DEVCTL_REDIS_PORT, REDIS_URL, ...) are
declared with each key in devctl/config/schema.py (``KEYS[key].env``). These are
here, apart, because the CLI reads them at start-up without loading the schema.
"""

from __future__ import annotations

CONFIG_FILE = "DEVCTL_CONFIG"
DEBUG = "DEVCTL_DEBUG"
