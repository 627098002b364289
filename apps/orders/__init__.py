"""Orders: a small example domain that exercises every platform capability end to end."""
