"""Protocol and runtime constants in one place."""

PROTOCOL_VERSION = 1

# Inbound limits: checked before anything a header claims is allocated.
MAX_HEADER_BYTES = 64 * 1024
MAX_TENSORS_PER_MESSAGE = 64
MAX_TENSOR_NDIM = 8
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# Rounds ahead of the current one whose messages are buffered; later ones are dropped.
ROUND_WINDOW = 4
# Messages parked (early rounds, or tags nobody asked for yet) per peer; beyond, dropped as "buffer full".
# Legit traffic parks a few tags of the next round or so. The bytes parked per peer are also capped at
# PARKED_CAPS_PER_PEER x max_message_bytes: all of an agent's memory a neighbour can hold this way.
MAX_PARKED_PER_PEER = 32
PARKED_CAPS_PER_PEER = 2
# After a round's deadline the inbox is drained for messages that already arrived; at most this many / long.
DRAIN_MAX_MESSAGES = 64
DRAIN_MAX_SECONDS = 0.05
# A restarted peer repeats its hello once a second; a running agent answers one per peer per this interval.
WELCOME_INTERVAL_SECONDS = 0.5

# Why an inbound message was dropped: the only keys of ExchangeStats.dropped.
DROP_REASONS = (
    "malformed header", "protocol version", "wrong run id", "malformed tensors", "frame count", "frame size",
    "too large", "identity mismatch", "not a neighbour", "non-finite", "unexpected sender", "duplicate",
    "unexpected tensors", "stale round", "round too far ahead", "buffer full", "repeated hello", "shared memory",
    "other",
)

# Only these dtypes cross the wire; anything else is rejected.
WIRE_DTYPES = ("float32", "float64", "float16", "int64", "int32", "uint8")

# Tags for the control rounds every run has.
TAG_HELLO = "hello"
TAG_WELCOME = "welcome"  # reply to a hello that arrives mid-run: carries the current round
TAG_BYE = "bye"
HELLO_ROUND = -1
STOP_POLL_SECONDS = 0.25  # with a stop event: the longest an exchange wait runs on once the event is set
