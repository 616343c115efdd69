"""Channel-layer group names.

Messages no longer travel on the channel layer (see ``sync.services.hub``);
each socket still joins its user's group, which carries control events such
as revocation (``sync.services.revocation``) to every process.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

SAFE_GROUP_PART = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def user_group(user_id: Any) -> str:
    """Group of every connection of one user (all tabs)."""
    key = str(user_id)
    if not SAFE_GROUP_PART.fullmatch(key):
        # Group names allow a narrow alphabet; hash anything else (UUIDs with
        # braces, e-mail-like keys) into it.
        key = hashlib.sha256(key.encode()).hexdigest()[:40]
    return f"sync.user.{key}"
