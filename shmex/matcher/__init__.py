"""The order book and its matching rules, compiled by numba.

Contract:
- Price-time priority: best price first, FIFO within a level, trades at the resting price.
- Deterministic: reports and `state_hash()` depend only on the sequenced commands.
- Every command gets its answer in the same call: ACK, FILLs, CANCELED, REPLACED,
  EXPIRED or one REJECTED with a reason; business errors never raise.
- No allocation per order: the arena, ladder and id table are allocated once.
- `seq` is stamped 1, 2, 3, ... by `process`; `apply` accepts only last_seq + 1.

Fill semantics (what a user can rely on):
- A NEW is checked in this order, and the first failing check is its only answer:
  BAD_FIELD (side/type/tif/stp; a MARKET order that is POST_ONLY), UNKNOWN_SYMBOL, BAD_QTY (qty <= 0), PRICE_BAND (LIMIT
  outside the band), DUPLICATE_ID (its (producer, client_id) is live),
  POST_ONLY_WOULD_CROSS, BOOK_FULL (a GTC or POST_ONLY limit while the arena is full),
  TOO_MANY_ORDERS (a GTC or POST_ONLY limit while its producer has `max_open_orders`
  resting).
- A command with a `verdict` (set by the engine's merge step: BAD_PSEQ, WRONG_ACCOUNT)
  is REJECTED with that reason and nothing else.
- Accepted: one ACK, then it trades while it crosses; each fill gives the taker's FILL
  then the maker's, `leaves` being each owner's remaining quantity.
- The remainder rests (LIMIT GTC, POST_ONLY) or is EXPIRED (MARKET whatever its tif, IOC,
  and FOK). FOK is all or nothing, LIMIT and MARKET alike: one that cannot fill in full at
  once, counting every crossing quantity before self-trade prevention, trades nothing.
- Self-trade prevention when the incoming account != 0 equals the resting account, by the
  incoming stp: CANCEL_NEWEST cancels the taker; CANCEL_OLDEST the resting order and goes
  on; CANCEL_BOTH both; DECREMENT takes the smaller quantity off both without a trade
  (the side reaching 0 is CANCELED, a resting order left above 0 is REPLACED), all with
  reason SELF_TRADE.
- CANCEL: CANCELED with the open quantity, or REJECTED UNKNOWN_ORDER. REPLACE: checks
  UNKNOWN_ORDER, BAD_QTY, PRICE_BAND, BAD_FIELD (stp); same price and qty <= leaves keeps
  priority; otherwise the order re-enters as a GTC limit (may trade, rests at the back),
  except that an order entered POST_ONLY stays post-only: a replace to a price that would
  cross is REJECTED POST_ONLY_WOULD_CROSS and the order rests as it was.
"""

from shmex.matcher.check import check_book
from shmex.matcher.matcher import Matcher

__all__ = ["Matcher", "check_book"]
