"""Driver kinds of the tests' own, named in lab.toml as "kinds:Recorded" and "kinds:Flaky",
the way a lab author adds a kind."""

import json
import os

from drivers import DriverError, Output
from drivers.base import Driver


class Recorded(Output):
    """A GPIO output that writes each safe() and the mock pin's value after it to the record
    file ($LABRT_TEST_RECORD), so a test can see it even after the process is gone."""

    def safe(self) -> None:
        super().safe()
        path = os.environ.get("LABRT_TEST_RECORD")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"event": "safe", "device": self.name, **self.state()}) + "\n")
                f.flush()
                os.fsync(f.fileno())


class Flaky(Driver):
    """A device whose safe() fails while the class says so."""

    kind = "tests.flaky"
    failing = False

    def safe(self) -> None:
        if Flaky.failing:
            raise DriverError("the relay does not answer")

    def state(self) -> dict:
        return {"failing": Flaky.failing}
