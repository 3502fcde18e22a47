"""A real SMTP server for the `email` handler tests (aiosmtpd).

Usage: smtp_server.py PORT OUTDIR MODE, MODE one of ok | 4xx | 5xx. With ok, each message
is written to OUTDIR/<n>.eml and answered 250; with 4xx or 5xx the DATA command is
answered 451 or 550. Prints "ready" once listening and exits when stdin closes (the test
that started it is done).
"""

import os
import sys

from aiosmtpd.controller import Controller


class Handler:
    def __init__(self, outdir, mode):
        self.outdir = outdir
        self.mode = mode
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.mode == "4xx":
            return "451 4.3.0 Mailbox busy, try again later"
        if self.mode == "5xx":
            return "550 5.7.1 Message rejected by policy"
        self.count += 1
        path = os.path.join(self.outdir, f"{self.count}.eml")
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        os.rename(path + ".tmp", path)
        with open(os.path.join(self.outdir, f"{self.count}.rcpt"), "w") as f:
            f.write("\n".join(envelope.rcpt_tos))
        return "250 OK"


def main():
    port, outdir, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    controller = Controller(Handler(outdir, mode), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
