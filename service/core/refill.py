"""How many rows a batcher may expect back soon: the clients it has just answered.

Closed-loop clients (a load balancer's connections, a pipeline stage, a benchmark) send their
next request as soon as they get an answer. Under such load a work-conserving batcher that
dispatches whatever is queued when its instance frees up settles into half batches: the rows
that queued during the last call go alone while the rows just answered are still on their way
back, and both halves then take turns. A model whose call costs much more than its rows (an
LSTM, a CNN at small batches) runs far below what one full batch per turn would give.

`ReturnWatch` counts the rows answered by the last batch and the rows that arrived since: the
difference is what the batcher may hold a short while for (see `Batcher._collect`). At low load
every answered client's next request has arrived by the time it is dispatched, so nothing is
expected and nothing waits.
"""

from __future__ import annotations

from dataclasses import dataclass

# Through front-end workers the answered clients' next requests take a round trip of several
# ms (answers to the workers, HTTP out and in, requests back): sentiment with 2 workers came
# back in time with a half-call hold and a fifth-call gap (mean batch 63.8, 1,637-1,697
# req/s) but not with a quarter and a tenth (32.0, 1,131-1,157 req/s). A model may hold
# longer (`refill_hold`): digits' cheaper call is outlasted by that round trip.
REFILL_HOLD = 0.5  # default longest hold, in average model calls
REFILL_GAP = 0.2  # the hold ends once no row arrived for this many average model calls


@dataclass
class ReturnWatch:
    answered_rows: int = 0  # rows of the batch answered last
    answered_at: float = float("-inf")  # event loop time of that answer
    arrived_since: int = 0  # rows queued since that answer

    def answered(self, rows: int, now: float) -> None:
        self.answered_rows, self.answered_at, self.arrived_since = rows, now, 0

    def arrived(self, rows: int) -> None:
        self.arrived_since += rows

    def expected(self, now: float, call_seconds: float) -> int:
        """Rows of answered clients not back yet, while the answer is recent (within one
        average call); 0 otherwise."""
        if now - self.answered_at > call_seconds:
            return 0
        return max(0, self.answered_rows - self.arrived_since)
