"""labrt: put a physical laboratory on the web.

The public API is what this module exports; everything else is private and may change.
"""

from .access import logout, requires_active, requires_login
from .config import ConfigError
from .lab import Lab
from .tasks import AlreadyRunning, Task, TooManyTasks, current_task
from .user import user

__version__ = "0.1.0"

__all__ = [
    "AlreadyRunning",
    "ConfigError",
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
