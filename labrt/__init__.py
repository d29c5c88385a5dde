"""labrt: put a physical laboratory on the web.

The public API is what this module exports (and ``labrt.testing``, the kit for a lab's own
tests); everything else is private and may change. docs/author-api.md documents each name.
"""

from ._engine.hardware import Devices
from ._engine.tasks import AlreadyRunning, Task, TooManyTasks, current_task
from .access import logout, requires_active, requires_login
from .config import ConfigError
from .lab import Lab
from .users import user

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "ConfigError",
    "Devices",
    "Lab",
    "Task",
    "TooManyTasks",
    "__version__",
    "current_task",
    "logout",
    "requires_active",
    "requires_login",
    "user",
]
