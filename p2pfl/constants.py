"""Protocol and runtime constants in one place."""

PROTOCOL_VERSION = 1

# Inbound limits: checked before anything a header claims is allocated.
MAX_HEADER_BYTES = 64 * 1024
MAX_TENSORS_PER_MESSAGE = 64
MAX_TENSOR_NDIM = 8
DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# Rounds ahead of the current one whose messages are buffered; later ones are dropped.
ROUND_WINDOW = 4

# Only these dtypes cross the wire; anything else is rejected.
WIRE_DTYPES = ("float32", "float64", "float16", "int64", "int32", "uint8")

# Tags for the control rounds every run has.
TAG_HELLO = "hello"
TAG_WELCOME = "welcome"  # reply to a hello that arrives mid-run: carries the current round
TAG_BYE = "bye"
HELLO_ROUND = -1
