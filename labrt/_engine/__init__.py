"""The engine: what runs a lab (sessions, tasks, push, hardware, the author's code).

Private: nothing here is imported by lab authors. The public names defined here (``Task``,
``current_task``, ``AlreadyRunning``, ``TooManyTasks``) are exported by ``labrt`` itself.
The engine is given what the author registered (a :class:`~.registry.Registry`), never the
``Lab``, so that it sits below the author API (docs/architecture.md).
"""
