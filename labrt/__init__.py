"""labrt: put a physical laboratory on the web.

The public API is what this module exports; everything else is private and may change.
"""

from .access import logout, requires_active, requires_login
from .config import ConfigError
from .lab import Lab
from .user import user

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Lab",
    "__version__",
    "logout",
    "requires_active",
    "requires_login",
    "user",
]
