"""An S3-compatible server for the `archive` handler tests: moto in server mode.

Usage: s3_server.py PORT BUCKET. Creates BUCKET, prints "ready" once listening and exits
when stdin closes (the test that started it is done).
"""

import sys
import urllib.request

from moto.server import ThreadedMotoServer


def main():
    port, bucket = int(sys.argv[1]), sys.argv[2]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
    urllib.request.urlopen(request).read()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
