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

Clients that pause between requests (a person, a job with work of its own, a paced client)
come back after the hold, and holding for them only delays the rows held: digits with 2
workers and 32 clients pausing a random 0-40 ms, holding for every answered row cost 8-18 %
of req/s and 2-6 ms of p50, and the holds filled 29 % of what they waited for (88 % with
closed-loop clients). So each request says how long its client paused after its previous
answer on the connection (`RequestRecord.client_pause`, measured by the HTTP protocol), and
`ReturnWatch` learns the share of quick clients: nothing is held for while most clients
pause longer, and then only that share of the answered rows is expected back (paced
clients' requests do not count as returns). A request whose pause is not known (a
connection's first, gRPC) counts as a quick return, as every request did before.
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
QUICK_SHARE_WEIGHT = 1 / 32  # of each request in the learnt share (about the last 32 count)
# A client is quick if it paused no longer than the hold, and never above this: held batches
# run longer calls, and the hold (in calls) would grow with them and count ever more paced
# clients as quick (digits, clients pausing 0-40 ms: the share went 0.26 -> 0.6 and req/s
# fell to 567 from 900 without refill). Closed-loop wrk clients on a busy 2-core machine
# paused 1-6 ms (90th percentile), pausing clients 4-41 ms.
QUICK_PAUSE_MAX = 0.010
QUICK_MAJORITY = 0.5  # below this share of quick clients, nothing is held for


@dataclass
class ReturnWatch:
    answered_rows: int = 0  # rows of the batch answered last
    answered_at: float = float("-inf")  # event loop time of that answer
    arrived_since: int = 0  # rows queued since that answer by clients back within a hold
    quick_share: float = 1.0  # of requests whose client came back within a hold (decayed)

    def answered(self, rows: int, now: float) -> None:
        self.answered_rows, self.answered_at, self.arrived_since = rows, now, 0

    def arrived(self, rows: int, client_pause: float | None, hold_seconds: float) -> None:
        """A request of `rows` whose client paused `client_pause` seconds (None: unknown)
        after its previous answer; `hold_seconds` is the longest hold now."""
        if client_pause is None:
            self.arrived_since += rows
            return
        quick = client_pause <= min(hold_seconds, QUICK_PAUSE_MAX)
        self.quick_share += QUICK_SHARE_WEIGHT * (float(quick) - self.quick_share)
        if quick:
            self.arrived_since += rows

    def expected(self, now: float, call_seconds: float) -> int:
        """Rows of answered clients that come back quickly and are not back yet, while the
        answer is recent (within one average call); 0 otherwise."""
        if now - self.answered_at > call_seconds or self.quick_share < QUICK_MAJORITY:
            return 0
        quick_rows = int(self.answered_rows * self.quick_share + 0.5)  # rounded half up
        return max(0, quick_rows - self.arrived_since)
