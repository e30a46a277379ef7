"""bench/upload: N slow uploads open at once against the embedded store.

Opens N TLS connections in batches of 50 (a thousand handshakes started at
once would crawl on one Python thread), sends on each the headers of a PUT
(2 MiB) to a URL pre-signed by the operator credential (SigV4, botocore), then 1 KiB
of body every 0.25 s (4 KiB/s, above the store's default minimum rate) on
every connection. Once all are up it prints "up=N" and keeps trickling for
HOLD seconds, then prints "done" and closes them.

    slow_clients.py PORT CA N HOLD ACCESS_KEY SECRET
"""

import asyncio
import ssl
import sys
import time

import boto3
from botocore.config import Config

port, ca, n, hold, ak, sk = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                             float(sys.argv[4]), sys.argv[5], sys.argv[6])
# Above [store] pack_max_object (1 MiB by default): each upload gets a data
# file of its own, so run.sh can count the uploads in progress as files.
SIZE = 2 << 20
s3 = boto3.client("s3", endpoint_url="https://127.0.0.1:%d" % port, region_name="us-east-1",
                  aws_access_key_id=ak, aws_secret_access_key=sk, verify=ca,
                  config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
paths = [s3.generate_presigned_url("put_object", Params={"Bucket": "ingest", "Key": "slow/%d" % i},
                                   ExpiresIn=3600).split(str(port), 1)[1] for i in range(n)]


async def main():
    ctx = ssl.create_default_context(cafile=ca)
    conns = []

    async def connect(i):
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                             server_hostname="127.0.0.1",
                                             ssl_handshake_timeout=120)
        w.write(("PUT %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n\r\n"
                 % (paths[i], port, SIZE)).encode())
        await w.drain()
        conns.append(w)

    stop = False

    async def trickle():
        while not stop:
            for w in list(conns):
                if not w.is_closing():
                    w.write(b"x" * 1024)
            await asyncio.sleep(0.25)

    t = asyncio.ensure_future(trickle())
    for b in range(0, n, 50):
        await asyncio.gather(*(connect(i) for i in range(b, min(n, b + 50))))
    print("up=%d" % sum(1 for w in conns if not w.is_closing()), flush=True)
    await asyncio.sleep(hold)
    stop = True
    await t
    print("done", flush=True)
    for w in conns:
        w.close()


asyncio.run(main())
