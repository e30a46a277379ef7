"""boto3's generate_presigned_url on one thread: the peer of presign_bench.

The same URL shape as presign_bench.c (path-style PUT, bound Content-Type,
15-minute expiry, a new key each time). Prints one line per run and, last,
"boto3_per_s=N" (the median). Usage: boto3_presign.py [RUNS [SECONDS]]
"""
import statistics
import sys
import time

import boto3
from botocore.config import Config


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    s3 = boto3.client("s3", endpoint_url="https://store.example.com:8443",
                      region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                      aws_secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                      config=Config(signature_version="s3v4",
                                    s3={"addressing_style": "path"}))
    rates = []
    n = 0
    for r in range(runs):
        count = 0
        start = time.perf_counter()
        while True:
            for _ in range(100):
                s3.generate_presigned_url(
                    "put_object", ExpiresIn=900,
                    Params={"Bucket": "ingest", "ContentType": "audio/wav",
                            "Key": "dev-001/2026/11/25/g_%012d-lung.wav" % n})
                n += 1
                count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        rates.append(count / elapsed)
        print("run %d: %.0f URLs/s" % (r + 1, rates[-1]))
    print("boto3_per_s=%.0f" % statistics.median(rates))


if __name__ == "__main__":
    main()
