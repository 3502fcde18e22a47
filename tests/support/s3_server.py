"""An S3-compatible server for the `archive` handler tests: moto in server mode.

Usage: s3_server.py PORT BUCKET. Creates BUCKET, prints "ready" once listening and exits
when stdin closes (the test that started it is done).
"""

import sys
import time
import urllib.request

from moto.server import ThreadedMotoServer


def main():
    port, bucket = int(sys.argv[1]), sys.argv[2]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
    for attempt in range(100):
        try:
            urllib.request.urlopen(request).read()
            break
        except OSError:
            if attempt == 99:
                raise
            time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
