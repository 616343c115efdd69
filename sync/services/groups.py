"""Channel-layer group names, and whether the layer reaches other processes.

Messages do not travel on the channel layer (see ``sync.services.hub``). A
layer shared by several processes (channels-redis) still carries control
events such as revocation (``sync.services.revocation``) to the sockets of
other processes, through each user's group. The in-memory layer reaches only
this process, where the hub already does that job, so sockets skip it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

SAFE_GROUP_PART = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def user_group(user_id: Any) -> str:
    """Group of every connection of one user (all tabs)."""
    key = str(user_id)
    if not SAFE_GROUP_PART.fullmatch(key):
        # Group names allow a narrow alphabet; hash anything else (UUIDs with
        # braces, e-mail-like keys) into it.
        key = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"sync.user.{key}"


def cross_process_layer():
    """The default channel layer if it reaches other processes, else None."""
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        return None
    return layer
