"""How long a run may wait for the model, and how often it may try again.

`ModelPolicy` is the configuration (the MODEL_* settings). Each attempt at a run gets one `RunBudget`,
shared by every model request the run makes: the streamed calls of its tool loop, their retries and the
non-streamed fallback. It decides, failure by failure, whether the run tries again and after what wait:

- a failure the service would repeat ("never") ends the run at once;
- at most `tries` model requests of a run may fail; the one that makes it `tries` ends the run;
- a Retry-After is honoured up to `retry_after_max_seconds`; a longer one ends the run at once, since
  retrying earlier would be refused again and waiting longer keeps the reader staring at nothing;
- without a Retry-After the wait doubles from about a second (with jitter, so runs refused together do
  not come back together);
- nothing is tried that cannot finish within `run_seconds` of the run's start.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from travelplanner.model_failures import ModelFailure
from travelplanner.settings import Settings

BUDGET_KWARG = "model_budget"  # the client kwarg in which a run hands its RunBudget to the chat client
_FIRST_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class ModelPolicy:
    connect_seconds: float = 10
    first_byte_seconds: float = 60
    idle_seconds: float = 30
    tries: int = 3
    retry_after_max_seconds: float = 30
    run_seconds: float = 300

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelPolicy:
        return cls(settings.model_connect_seconds, settings.model_first_byte_seconds, settings.model_idle_seconds,
                   settings.model_tries, settings.model_retry_after_max_seconds, settings.model_run_seconds)

    def sdk_timeout(self) -> Any:
        """The OpenAI SDK's timeouts (an `openai.Timeout`).

        The SDK times the connection; our own timers time the chunks (first byte, idle) and the run, so its
        read timeout is only a backstop, as long as the run's budget.
        """
        import openai

        return openai.Timeout(connect=self.connect_seconds, read=self.run_seconds, write=self.connect_seconds,
                              pool=self.connect_seconds)

    def budget(self) -> RunBudget:
        return RunBudget(self)


class RunBudget:
    def __init__(self, policy: ModelPolicy, *, clock: Callable[[], float] = time.monotonic,
                 jitter: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._clock = clock
        self._jitter = jitter
        self.deadline = clock() + policy.run_seconds
        self.failures = 0
        self._first_failure_began: float | None = None

    def remaining(self) -> float:
        return max(self.deadline - self._clock(), 0.0)

    def spent(self) -> ModelFailure:
        """The failure of a run whose time is up."""
        what = f"the model did not finish within the run's {_seconds(self.policy.run_seconds)}"
        return ModelFailure(what, "never").give_up(self._tried() if self.failures else "")

    def next_try(self, failure: ModelFailure) -> float | None:
        """Count a failed try; the seconds to wait before the next one, or None when the run gives up.

        When the run gives up, `failure` is marked final and says why.
        """
        self.failures += 1
        if self._first_failure_began is None:
            self._first_failure_began = failure.began if failure.began is not None else self._clock()
        if failure.retry == "never":
            failure.give_up("not retried" if self.failures == 1 else self._tried())
            return None
        if self.failures >= self.policy.tries:
            failure.give_up(self._tried())
            return None
        asked = failure.retry_after
        if asked is not None and asked > self.policy.retry_after_max_seconds:
            failure.give_up(f"not retried: the service asked for a wait of {_seconds(asked)}, more than "
                            f"the {_seconds(self.policy.retry_after_max_seconds)} a run waits")
            return None
        wait = 0.0 if failure.retry == "run" else asked if asked is not None else self._backoff()
        if wait >= self.remaining():
            failure.give_up(f"{self._tried()}: waiting {_seconds(wait)} more would pass the run's "
                            f"{_seconds(self.policy.run_seconds)}")
            return None
        return wait

    def _backoff(self) -> float:
        doubled = _FIRST_BACKOFF_SECONDS * 2 ** (self.failures - 1)
        return min(doubled, self.policy.retry_after_max_seconds) * (0.5 + self._jitter() / 2)

    def _tried(self) -> str:
        since = self._first_failure_began if self._first_failure_began is not None else self._clock()
        tries = "1 try" if self.failures == 1 else f"{self.failures} tries"
        return f"gave up after {tries} over {_seconds(self._clock() - since)}"


def _seconds(value: float) -> str:
    shown = f"{value:.1f}".rstrip("0").rstrip(".") if value < 10 else f"{value:.0f}"
    return f"{shown} s"
