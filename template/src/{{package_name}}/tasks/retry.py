"""How long to wait before the next attempt of a failed task."""

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS's recommendation against retry stampedes).

    The delay before retry n (n = 1 after the first failure) is uniform in
    [0, min(backoff_max, backoff_base * 2 ** (n - 1))].
    """

    max_attempts: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must not be negative")

    def ceiling(self, failed_attempt: int) -> float:
        """The longest delay after attempt number `failed_attempt` failed."""
        return min(self.backoff_max, self.backoff_base * 2.0 ** (failed_attempt - 1))

    def delay(self, failed_attempt: int) -> float:
        """A random delay before the attempt after `failed_attempt`."""
        return random.uniform(0, self.ceiling(failed_attempt))  # noqa: S311 - jitter, not crypto

    def should_retry(self, failed_attempt: int) -> bool:
        return failed_attempt < self.max_attempts
