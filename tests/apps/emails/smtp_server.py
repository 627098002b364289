"""A real SMTP server on loopback (aiosmtpd), whose answers a test steers by the recipient's address.

``flaky<N>@…`` is answered 451 for its first N messages, ``down@…`` always 451, ``reject@…`` 550;
every other recipient is accepted. Accepted messages are kept, parsed, per recipient.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, defaultdict
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from tests.helpers import free_port

_FLAKY = re.compile(r"\Aflaky(\d+)@")


class SteeredHandler:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list[EmailMessage]] = defaultdict(list)
        self.refused: Counter[str] = Counter()

    async def handle_DATA(self, server, session, envelope) -> str:
        recipient = envelope.rcpt_tos[0]
        with self.lock:
            flaky = _FLAKY.match(recipient)
            if recipient.startswith("reject@"):
                self.refused[recipient] += 1
                return "550 5.1.1 No such mailbox here"
            if recipient.startswith("down@") or (flaky and self.refused[recipient] < int(flaky.group(1))):
                self.refused[recipient] += 1
                return "451 4.3.0 Try again later"
            message = message_from_bytes(envelope.content, policy=policy.default)
            for address in envelope.rcpt_tos:
                self.received[address].append(message)
        return "250 OK"

    def messages_to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return list(self.received.get(address, []))


class SmtpServer:
    """Start with ``start()``, stop with ``stop()``; ``url`` is the EMAIL_URL pointing at it."""

    def __init__(self) -> None:
        self.handler = SteeredHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.url = f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
