"""One round of bench multipart (run.sh): ferryd of FERRY_BUILD_DIR (a
release build) with the embedded store, started by the test harness; for
each of the files given (NAME=PATH): `aws s3 cp` up (cli_NAME) and down
(get_NAME), wall time; then boto3 8 MiB parts and CompleteMultipartUpload
alone (complete_NAME, wall time of that call). Prints one JSON line."""
import json, os, sys, time
src = os.environ["FERRY_SOURCE_DIR"]
sys.path.insert(0, os.path.join(src, "tests", "harness"))
sys.path.insert(0, os.path.join(src, "tests", "integration"))
import ferry_harness
from store_harness import BUCKET, StoreFerryd
from test_store_put import POLICY

files = dict(a.split("=", 1) for a in sys.argv[1:])
h = ferry_harness.Harness().start()
out = {"build": os.environ["FERRY_BUILD_DIR"]}
try:
    d = StoreFerryd(h, policy=POLICY, store=["max_object_size = 2G"])
    d.start()
    s3 = d.boto3()
    for name, path in files.items():
        t = time.monotonic()
        d.aws("s3", "cp", path, "s3://%s/bench/cli-%s" % (BUCKET, name))
        out["cli_" + name] = round(time.monotonic() - t, 3)
        dl = os.path.join(os.environ.get("TMPDIR", "/tmp"), "dl-" + name)
        t = time.monotonic()
        d.aws("s3", "cp", "s3://%s/bench/cli-%s" % (BUCKET, name), dl)
        out["get_" + name] = round(time.monotonic() - t, 3)
        os.unlink(dl)
        key = "bench/b3-" + name
        uid = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        done = []
        with open(path, "rb") as f:
            n = 1
            while True:
                chunk = f.read(8 << 20)
                if not chunk:
                    break
                r = s3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=n, Body=chunk)
                done.append({"ETag": r["ETag"], "PartNumber": n})
                n += 1
        t = time.monotonic()
        s3.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=uid,
                                     MultipartUpload={"Parts": done})
        out["complete_" + name] = round(time.monotonic() - t, 3)
    d.stop()
finally:
    h.close()
print(json.dumps(out))
