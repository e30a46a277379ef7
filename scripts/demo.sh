#!/usr/bin/env bash
# make demo: Ferry end to end on its defaults, on loopback, in a temp dir.
#
#   1. ferryctl makes a CA, the broker's and ferryd's certificates and a
#      device certificate (dev-001), and Mosquitto's config + ACL;
#   2. Mosquitto (mutual TLS) and ferryd with its embedded S3-compatible store
#      (HTTPS with the PKI's store certificate) start;
#   3. the device asks for an upload grant over MQTT 5 (mosquitto_rr, with its
#      own certificate), gets a pre-signed URL, uploads a heart-sound WAV with
#      curl over HTTPS, and the bytes are read back (operator credential) and
#      compared; the same URL again, and other bytes, are refused by the store;
#   4. the store announces the object: an S3-style event on MQTT, a processor
#      (examples/processors/payload_check) that reads it back and checks it,
#      a receipt and the processor's result to the device;
#   5. a few requests ferryd refuses, and why.
#
# Everything started here is stopped by PID on exit.
set -euo pipefail
FERRY_WHO="demo"
. "$(dirname "$0")/lib.sh"
build=$(cd "${1:-build/release}" && pwd)
root=$(cd "$(dirname "$0")/.." && pwd)
ferryctl=$build/cmd/ferryctl/ferryctl
ferryd=$build/cmd/ferryd/ferryd
py=/usr/bin/python3
ferry_workdir ferry-demo   # set FERRY_KEEP_TMP=1 to keep it
work=$tmp
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "PKI: a CA, server certificates, ferryd's identity and device dev-001"
"$ferryctl" pki init "$work/pki"
"$ferryctl" pki issue "$work/pki" dev-001
# A second ferryd identity, for a processor that watches the event topic.
"$ferryctl" pki ferryd "$work/pki" ferryd-watch
mqtt_port=$(free_port)
user_args=()
[ "$(id -u)" -eq 0 ] && user_args=(--user root)
"$ferryctl" broker-config "$work/broker" --pki "$work/pki" --bind 127.0.0.1 --port "$mqtt_port" \
  "${user_args[@]}"
echo "ACL confining each device to its own topics:"; grep -v -e '^#' -e '^$' "$work/broker/acl" | sed 's/^/  /'

step "Mosquitto with mutual TLS on 127.0.0.1:$mqtt_port"
mosquitto -c "$work/broker/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$mqtt_port"

step "ferryd with the embedded store"
store_port=$(free_port)
(umask 077; $py -c 'import secrets; print(secrets.token_urlsafe(30))' >"$work/store-secret"
 $py -c 'import secrets; print(secrets.token_urlsafe(30))' >"$work/operator-secret")
cat >"$work/ferryd.ini" <<INI
[ferryd]
ledger = $work/ledger.db
[broker]
port = $mqtt_port
cafile = $work/pki/ca.pem
certfile = $work/pki/ferryd.pem
keyfile = $work/pki/ferryd.key
client_id = ferryd
[store]
kind = embedded
endpoint = https://127.0.0.1:$store_port
port = $store_port
secret_key_file = $work/store-secret
operator_secret_key_file = $work/operator-secret
tls_cert = $work/pki/store.pem
tls_key = $work/pki/store.key
data_dir = $work/store
[policy]
content_types = audio/*, image/*
max_size = 50M
; Where ferryd announces each stored object (S3 event-notification JSON),
; and a processor run like a Lambda: it reads the object back, checks it and
; its summary goes to the device as a "processed" message.
[target.bus]
type = mqtt
[target.check]
type = command
command = $work/payload_check.sh
timeout = 20s
INI
cat >"$work/payload_check.sh" <<SH
#!/bin/sh
export FERRY_S3_ENDPOINT=https://127.0.0.1:$store_port FERRY_S3_ACCESS_KEY=ferry-operator
export FERRY_S3_SECRET_KEY_FILE=$work/operator-secret FERRY_S3_REGION=us-east-1
export FERRY_S3_CA_FILE=$work/pki/ca.pem
exec $build/examples/processors/payload_check
SH
chmod 700 "$work/payload_check.sh"
"$ferryd" --check-config -c "$work/ferryd.ini"
"$ferryd" -c "$work/ferryd.ini" 2>"$work/ferryd.log" &
pids+=($!)
wait_for 10 grep -q event=broker.connected "$work/ferryd.log"
wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$store_port"
grep -E "event=(store.started|ferryd.started|broker.connected)" "$work/ferryd.log" | sed 's/^/  /'

step "dev-001 records a heart sound (a 2 s WAV) and asks for a grant over MQTT 5"
$py - "$work/heart.wav" <<'PY'
import math, struct, sys, wave
with wave.open(sys.argv[1], "wb") as w:
    w.setnchannels(1); w.setsampwidth(2); w.setframerate(4000)
    beat = lambda t: math.exp(-((t % 0.8) - 0.05) ** 2 / 0.0004) + 0.6 * math.exp(-((t % 0.8) - 0.35) ** 2 / 0.0004)
    w.writeframes(b"".join(struct.pack("<h", int(12000 * beat(i / 4000) * math.sin(2 * math.pi * 60 * i / 4000))) for i in range(8000)))
PY
size=$(stat -c %s "$work/heart.wav")
sha=$(sha256sum "$work/heart.wav" | cut -d' ' -f1)
request="{\"id\":\"r-1\",\"name\":\"heart 2026-11-25.wav\",\"size\":$size,\"content_type\":\"audio/wav\",\"sha256\":\"$sha\"}"
echo "request on ferry/dev-001/upload/request: $request"
dev=(-h 127.0.0.1 -p "$mqtt_port" --cafile "$work/pki/ca.pem" --cert "$work/pki/devices/dev-001.pem" --key "$work/pki/devices/dev-001.key")
grant=$(mosquitto_rr "${dev[@]}" -V mqttv5 -q 1 -t ferry/dev-001/upload/request \
  -e ferry/dev-001/upload/response -m "$request" -W 10)
echo "answer on ferry/dev-001/upload/response:"
echo "$grant" | $py -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=2))' | sed 's/X-Amz-Signature=[0-9a-f]*/X-Amz-Signature=…/'

# The device listens for its receipt and the processor's result; a
# processor with ferryd's rights listens for the event.
mosquitto_sub "${dev[@]}" -V mqttv5 -q 1 -t ferry/dev-001/upload/response -C 2 -W 30 \
  >"$work/device-messages" 2>&1 &
device_sub=$!
mosquitto_sub -h 127.0.0.1 -p "$mqtt_port" --cafile "$work/pki/ca.pem" \
  --cert "$work/pki/ferryd-watch.pem" --key "$work/pki/ferryd-watch.key" -V mqttv5 -q 1 \
  -t ferry/events/object-created -C 1 -W 30 >"$work/event" 2>&1 &
event_sub=$!
pids+=($device_sub $event_sub)
sleep 0.5

step "dev-001 uploads the bytes with curl (HTTPS, verifying the store against ca.pem)"
mapfile -t curl_args < <(echo "$grant" | $py -c '
import json, sys
g = json.load(sys.stdin)
for k, v in g["headers"].items():
    print("-H"); print("%s: %s" % (k, v))
print(g["url"])')
tls=(--cacert "$work/pki/ca.pem")
status=$(curl -sS "${tls[@]}" -o "$work/put.out" -w '%{http_code}' -X PUT -T "$work/heart.wav" "${curl_args[@]}")
echo "HTTP $status"
[ "$status" = 200 ] || { cat "$work/put.out"; exit 1; }
key=$(echo "$grant" | $py -c 'import json,sys; print(json.load(sys.stdin)["key"])')
get_url=$("$ferryctl" presign --endpoint "https://127.0.0.1:$store_port" --bucket ingest --key "$key" \
  --method GET --access-key ferry-operator --secret-key-file "$work/operator-secret")
curl -sS "${tls[@]}" --fail -o "$work/back.wav" "$get_url"
if cmp -s "$work/heart.wav" "$work/back.wav"; then
  echo "stored as ingest/$key: $size bytes, sha256 $sha (read back and compared)"
else
  echo "demo: the stored object differs from the upload" >&2; exit 1
fi
$py - "$work/ledger.db" "$key" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
row = db.execute("SELECT o.size, o.etag, o.device, o.grant_id, g.state FROM objects o"
                 " JOIN grants g ON g.id = o.grant_id WHERE o.object_key = ?", (sys.argv[2],)).fetchone()
print("  ledger: object size=%s etag=%s device=%s grant=%s (grant state: %s)" % row)
PY
wait "$event_sub" || { cat "$work/event"; exit 1; }
wait "$device_sub" || { cat "$work/device-messages"; exit 1; }
echo "event on ferry/events/object-created (S3 notification format):"
$py -c 'import json,sys; print(json.dumps(json.load(sys.stdin), indent=2))' <"$work/event" | sed 's/^/  /'
echo "to the device on ferry/dev-001/upload/response:"
sed 's/^/  /' "$work/device-messages"
echo "the same URL a second time (grants are single-use):"
curl -sS "${tls[@]}" -w '\n  HTTP %{http_code}\n' -X PUT -T "$work/heart.wav" "${curl_args[@]}" | sed 's/^/  /'
echo "the same URL used to send other bytes as text/html:"
head -c "$size" /dev/urandom >"$work/other.wav"
curl -sS "${tls[@]}" -o /dev/null -w '  HTTP %{http_code} (the signature binds the content type, length and checksum)\n' \
  -X PUT -T "$work/other.wav" -H "content-type: text/html" "${curl_args[@]: -1}"

step "Requests ferryd refuses"
for r in "{\"id\":\"r-2\",\"name\":\"../../etc/passwd\",\"size\":10,\"content_type\":\"audio/wav\"}" \
         "{\"id\":\"r-3\",\"name\":\"scan.dcm\",\"size\":10,\"content_type\":\"application/dicom\"}" \
         "{\"id\":\"r-4\",\"name\":\"huge.wav\",\"size\":999999999999,\"content_type\":\"audio/wav\"}" \
         "{\"id\":\"r-5\",\"id\":\"r-6\"}"; do
  echo "  $(mosquitto_rr "${dev[@]}" -V mqttv5 -q 1 -t ferry/dev-001/upload/request \
    -e ferry/dev-001/upload/response -m "$r" -W 10)"
done

step "The ledger's audit trail for dev-001 (ferryctl audit)"
"$ferryctl" audit --ledger "$work/ledger.db" dev-001 | sed 's/^/  /'

step "Done"
echo "See docs/ for multi-ferryd fleets, external S3-compatible stores and webhook targets."
